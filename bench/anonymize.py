"""Tabular anonymization on adult: k-anonymity and l-diversity reached, checked by pycanon, and what it costs a model.

    python bench/anonymize.py [--k 10] [--l 2] [--quasi age,education,...]

1. Reads adult.data through examples/income.yaml (32,561 people; LUODI_DATASETS) and anonymizes it as
   `luodi anonymize` does (luodi.privacy.anonymize): quasi-identifiers age, education, marital status, race, sex,
   native country (issue 18), plus education-num, which states education as a number (left raw it would undo
   education's generalization); sensitive attribute income.
2. Checks the result independently with pycanon (k_anonymity, l_diversity); install it with
   `pip install --no-deps pycanon==1.3.6 beartype==0.22.2` (its own pins would replace numpy and pandas).
3. Trains the same LightGBM on the original and on the anonymized table (one stratified 80/20 split, seed 0; the
   analyst only sees the released table, so both parts are anonymized; ranges read as their midpoints, category
   sets as categories) and compares accuracy on the 20 %.
Goals (issue 18): k = 10 and l = 2 with <= 2 % of rows suppressed; >= 98 % of the original accuracy. Stored in
bench/results/anonymize.json (record.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from record import machine, save

ROOT = Path(__file__).resolve().parents[1]
QUASI = "age,education,education-num,marital-status,race,sex,native-country"
DROP = ["fnlwgt", "education"]  # as examples/income.yaml: a sampling weight; education-num says the same


def model_frame(df: pd.DataFrame, quasi: list[str], numeric: list[str]) -> pd.DataFrame:
    """Features LightGBM reads: generalized ranges "a-b" as their midpoints, text as categories."""
    out = df.drop(columns=[c for c in [*DROP, "income"] if c in df.columns]).copy()
    for c in out.columns:
        if c in numeric and c in quasi:
            parts = out[c].astype(str).str.split("-", n=1, expand=True).astype(float)
            out[c] = parts.mean(axis=1)
        elif not pd.api.types.is_numeric_dtype(out[c]):
            out[c] = out[c].astype(str).astype("category")
    return out


def accuracy(df: pd.DataFrame, quasi: list[str], numeric: list[str]) -> float:
    import lightgbm as lgb
    from sklearn.model_selection import train_test_split

    x, y = model_frame(df, quasi, numeric), (df["income"] == ">50K").astype(int)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, verbose=-1, random_state=0)
    model.fit(x_tr, y_tr)
    return float((model.predict(x_te) == y_te).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--l", type=int, default=2)
    ap.add_argument("--quasi", default=QUASI)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    from luodi.privacy.anonymize import anonymize, anonymize_config, read_source

    quasi = [c.strip() for c in args.quasi.split(",") if c.strip()]
    df = read_source(str(ROOT / "examples" / "income.yaml"))
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    cfg = anonymize_config({"quasi": quasi, "k": args.k, "l": args.l, "sensitive": "income"})
    t = time.process_time()
    result = anonymize(df, cfg)
    seconds = time.process_time() - t
    r = result.report
    try:
        from pycanon import anonymity

        k_check = int(anonymity.k_anonymity(result.frame, quasi))
        l_check = int(anonymity.l_diversity(result.frame, quasi, ["income"]))
        checked = "pycanon"
    except ImportError:
        k_check, l_check, checked = r["k_reached"], r["l_reached"], "luodi's own count (pycanon not installed)"
    original, released = accuracy(df, quasi, numeric), accuracy(result.frame, quasi, numeric)
    ratio = released / original
    print(f"adult: {r['rows']} rows, quasi-identifiers {', '.join(quasi)}; sensitive income")
    print(f"  {r['classes']} groups, mean size {r['mean_class_size']}; information loss (NCP) {r['ncp']:.3f}; "
          f"{seconds:.1f} CPU-s")
    print(f"  k {k_check} (goal {args.k}), l {l_check} (goal {args.l}) by {checked}; suppressed "
          f"{r['suppressed_share']:.2%} (goal <= 2 %)")
    print(f"  LightGBM accuracy: original {original:.4f}, anonymized {released:.4f} = {ratio:.2%} (goal >= 98 %)")
    goals = [
        {"goal": f"adult: k-anonymity (k = {args.k})", "value": k_check, "target": args.k, "op": ">=",
         "met": k_check >= args.k, "note": f"checked by {checked}; quasi-identifiers {', '.join(quasi)}"},
        {"goal": f"adult: distinct l-diversity of income (l = {args.l})", "value": l_check, "target": args.l,
         "op": ">=", "met": l_check >= args.l, "note": f"checked by {checked}"},
        {"goal": "adult: rows suppressed", "value": r["suppressed_share"], "target": 0.02, "op": "<=",
         "met": r["suppressed_share"] <= 0.02, "note": f"{r['suppressed']} of {r['rows']} rows"},
        {"goal": "adult: LightGBM accuracy on the anonymized table / on the original", "value": round(ratio, 4),
         "target": 0.98, "op": ">=", "met": ratio >= 0.98,
         "note": f"{released:.4f} / {original:.4f}; one stratified 80/20 split (seed 0), both parts anonymized"},
    ]
    data = {"machine": machine(), "report": r, "accuracy": {"original": original, "anonymized": released},
            "command": "python bench/anonymize.py" + (f" --k {args.k}" if args.k != 10 else "")
            + (f" --l {args.l}" if args.l != 2 else "") + (f" --quasi {args.quasi}" if args.quasi != QUASI else ""),
            "goals": goals}
    if not args.no_save:
        print(f"stored in {save('anonymize', data)}")


if __name__ == "__main__":
    main()
