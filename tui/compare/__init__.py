"""``octa-tui compare``: several runs, live and recorded, side by side in one view.

Pure parts (no Textual, no sockets) are tested directly: :mod:`.series` turns a run into
(x, y) arrays for a chosen channel, :mod:`.aggregate` buckets them into chart columns and
combines groups into a mean with a min-max band, :mod:`.chart` draws them, :mod:`.table`
builds the run table and its CSV. :mod:`.runs` loads recordings and follows live trainers,
:mod:`.app` is the screen and :mod:`.cli` the command line.
"""
