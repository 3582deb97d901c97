"""Market recordings: the versioned format, its writer, its reader and the recorder.

`format` owns the layout (file names, record kinds, fields), `writer` writes it off the event
loop, `reader` reads it back in receive-time order, `recorder` runs `python -m orchestrator
record`, and `tap` records the market feed of a trading daemon (`RECORD_DIR`).
"""

from recording.format import VERSION, Record, RecordingError
from recording.reader import Recording
from recording.writer import RecordWriter

__all__ = ["VERSION", "Record", "RecordWriter", "Recording", "RecordingError"]
