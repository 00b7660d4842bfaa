"""The status words of a catalogue module in a tree: one vocabulary for `list` (markers only), `status`
and `check` (the inserted code verified), on every target."""

APPLIED = "applied"
NOT_APPLIED = "not applied"
OUTDATED = "outdated"
EDITED = "edited"
HAND_PASTED = "hand-pasted"
PARTIAL = "partial"
UNREADABLE = "unreadable"  # `list` only: a file it could not tokenize
