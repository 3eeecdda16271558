"""Issue 18's goals in one run: PII detection, table anonymization, differentially private and federated training,
encryption at rest and the prompt-injection guard.

    python bench/privacy.py                   # run every part, then print every goal against its target
    python bench/privacy.py --only anonymize  # some parts: pii, anonymize, dp, federated, encryption, injection
    python bench/privacy.py --stored          # print the goals from bench/results without running anything

Each part is its own bench script that stores its numbers and goals in bench/results/<part>.json; run alone, each
has more options:
- pii (bench/pii.py): span-level F2 and sentences/s on a labelled benchmark built from the datasets; needs a
  trained entity-extraction run in LUODI_HOME (its docstring says how to train one without the benchmark's file);
- anonymize (bench/anonymize.py): adult to k-anonymity 10 and l-diversity 2, checked by pycanon, and LightGBM on it;
- dp (bench/dp.py): the MNIST app and an adult MLP with and without DP-SGD;
- federated (bench/federated.py): FedAvg (Flower) on adult and nsl-kdd against centralized training, and the peak
  memory of 100 simulated clients;
- encryption (bench/encryption.py): the cold load of an encrypted MiniLM app against plaintext, and AES-GCM MB/s;
- injection (bench/injection.py): the prompt-injection guard on held-out attack templates, its latency, and attack
  success on the RAG answerer.
`python bench/tables.py` renders the goal table into docs/privacy.md. The server hardening goals (no 5xx under the
schemathesis fuzz run) are tests (tests/test_fuzz.py), not bench numbers.
"""

from __future__ import annotations

import argparse
import sys

import tables
from goals import chosen_parts, report, run_script

ADULT_DP = ["--config", "examples/income.yaml", "--label", "adult MLP, epsilon 1, batch 1024",
            "--set", "model.type=mlp", "--set", "model.options.inner_folds=0", "--set", "train.refit=false",
            "--set", "train.epochs=20", "--set", "train.early_stopping=null", "--set", "train.batch_size=1024",
            "--set", "train.optimizer=sgd", "--set", "train.lr=0.1", "--set", "train.privacy={epsilon: 1.0}"]
SCRIPTS = {  # part -> the runs of its bench script (each stores bench/results/<part>.json)
    "pii": [["pii.py"]],
    "anonymize": [["anonymize.py"]],
    "dp": [["dp.py"], ["dp.py", *ADULT_DP]],
    "federated": [["federated.py"]],
    "encryption": [["encryption.py"]],
    "injection": [["injection.py", "--e2e-docs", "200", "--e2e-poisoned", "60"]],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"comma-separated parts ({', '.join(SCRIPTS)}); default all")
    ap.add_argument("--stored", action="store_true", help="print the stored goals only; run nothing")
    args = ap.parse_args()
    parts = [] if args.stored else chosen_parts(ap, args.only, list(SCRIPTS))
    failed = [part for part in parts if any(run_script(part, cmd)["rc"] for cmd in SCRIPTS[part])]
    return report(18, tables.PRIVACY_PARTS, "privacy.py", "docs/privacy.md", failed)


if __name__ == "__main__":
    sys.exit(main())
