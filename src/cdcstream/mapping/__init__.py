"""ChangeEvent -> Record: DMS table-mapping rules, partition keys and the JSON envelope. Pure, no I/O."""
