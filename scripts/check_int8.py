"""Check a saved encoder detector's int8 path on a labelled split and record the result in its
detector.json, so that ``inference = "auto"`` (predict, serve, ``vd.load``) uses int8 only if
the official F1 stayed within 0.005 of fp32 (``valuedetect.encoder.int8``).

    PYTHONPATH=src python scripts/check_int8.py [DETECTOR_FOLDER] [--split validation] [--data-dir DIR]

Default: the shipped detector on the shipped validation split (1896 arguments; a few minutes on
2 cores, most of it the fp32 pass). The detector's own thresholds decide; nothing is tuned.
"""

from __future__ import annotations

import argparse
import json

from valuedetect.data import load_split
from valuedetect.encoder.int8 import record_check
from valuedetect.locate import shipped_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=None, help="saved detector folder (default: the shipped one)")
    parser.add_argument("--split", default="validation", help="labelled split to check on")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: the shipped dataset)")
    args = parser.parse_args()
    folder = args.folder or shipped_model_dir()
    record = record_check(folder, load_split(args.split, args.data_dir), log=print)
    print(json.dumps(record, indent=2))
    print(f"int8 {'within' if record['within_bound'] else 'BEYOND'} the bound: "
          f"{record['measure']} {record['int8']:.4f} (int8) vs {record['fp32']:.4f} (fp32) on {record['split']}")


if __name__ == "__main__":
    main()
