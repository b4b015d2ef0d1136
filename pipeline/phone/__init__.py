"""Your own recordings, and the model on a phone (optional: `make all` does not need them).

formats.py     Sensor Logger, phyphox and plain CSV exports: reading, and writing samples (make sample-recording)
recording.py   a recording through a trained run: timeline, probabilities, figure (make recording, make recording-check)
export.py      a run as LiteRT files with builtin ops only, parity checked (make export)
"""
