"""The SQL library (one named query per .sql file), shipped in the wheel as `raysweep.analysis`."""
