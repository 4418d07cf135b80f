"""Curation: suspect labels found (`suspects`), reviewed by a person (`review`), decisions kept
as versioned data and applied before split (`curate`). One family: its modules import each
other and core only."""
