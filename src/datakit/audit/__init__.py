"""`datakit audit`: an independent re-check of a split (issue 4, reliability.md SPL-04).

The audit trusts nothing the split stage wrote: by default it reads every file again and
computes, per image,

* the sha256 of the bytes (exact copies),
* the 256-bit dhash of the normalised picture as dedup computes it
  (`datakit.dedup.hashing.hash_bytes`), for near-copy candidates, and
* an 8x8 ``imagehash.average_hash`` as deepchecks' ``SimilarImageLeakage`` computes it: two
  pictures are similar when fewer than ``ceil(0.1 * 64 / 2) = 4`` bits differ. This second,
  unrelated hash is the oracle of SPL-04; its pairs are reported apart and do not change the
  verdict.

Near copies are found as dedup finds them (`datakit.dedup`): candidate pairs from the dhash
(within ``radius`` bits) and, when vectors are given (an embed folder, or computed with the model the command hands in),
from each image's nearest neighbours (what finds re-crops); a candidate counts when one
picture overlays the other (`datakit.dedup.verify`, the overlay check), so look-alike shots
of one shelf are not called leaks and re-cropped copies are.

Then it reports

* leaks: pairs of images in two different splits that are byte-identical (``kind="exact"``)
  or near copies as above (``kind="near"``, bytes differ; ``via`` names the signals that
  nominated the pair, ``match`` its overlay score);
* label conflicts: pairs (in any splits, the same one included) of identical or near images
  that carry different labels;
* class counts per split, the deviation ``n_cs / n_c - n_s / n`` of each class's share in
  each split from that split's overall share, and the classes missing from each split;
* files that could not be read or decoded (listed, never fatal).

`AuditReport.ok` is ``leaks <= max_leaks``; the command writes `to_json()` to
``reports/audit.json`` and exits non-zero when not ok, so the audit can gate a pipeline.

Modules: `stage.py` (`run(manifest, AuditParams, ctx) -> StageResult` on a split manifest,
`audit_folder` on SPLIT/LABEL/ folders, `audit_path` choosing between them, and which vectors
to use), `fingerprint.py` (per file), `checks.py` (the checks on a prepared table),
`report.py` (`AuditReport`).

Pictures flagged ``low_information`` by the hash (near-uniform, tiny) collide across
unrelated content, so they take part in the exact (sha256) check only, as in dedup (IMG-11).
"""


from __future__ import annotations

from datakit.audit.checks import audit_records
from datakit.audit.report import AHASH_SIZE, AHASH_THRESHOLD, DEFAULT_RADIUS, MAX_LISTED, AuditReport, ahash_bits
from datakit.audit.stage import audit_folder, audit_path, audit_vectors, folder_table, run

__all__ = [
    "AHASH_SIZE",
    "AHASH_THRESHOLD",
    "DEFAULT_RADIUS",
    "MAX_LISTED",
    "AuditReport",
    "ahash_bits",
    "audit_folder",
    "audit_path",
    "audit_records",
    "audit_vectors",
    "folder_table",
    "run",
]
