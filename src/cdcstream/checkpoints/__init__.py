"""Remembering where we are: the acknowledgement watermark and the durable checkpoint store."""
