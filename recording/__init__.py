"""Market recordings: the versioned format, its writer, its reader and the recorder.

`format` owns the layout (file names, record kinds, fields), `writer` writes it off the event
loop, `reader` reads it back in receive-time order (`reader.Recording`: the API every consumer
of a recording uses), `recorder` runs `python -m orchestrator record`, `tap` and `live` record
the market feed of a trading daemon (`RECORD_DIR`), `metadata` records Gamma rows.
"""
