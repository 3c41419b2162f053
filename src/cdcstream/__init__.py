"""cdcstream: change-data-capture to Amazon Kinesis Data Streams in AWS DMS's record format.

The package reads as the data flows::

    sources.* --ChangeEvent/Marker--> mapping --Record--> sinks.kinesis
        ^                                                     | acks (per record)
        +--- ack(checkpoint) <-- checkpoints.watermark <------+
                                      +--> checkpoints.store (durable)

``pipeline`` is the only module that knows all of them.
"""

__version__ = "0.1.0"
