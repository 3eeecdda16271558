"""Recommend with this bundle: one JSON request per line on stdin (or per argument), {"user_id": "196", "k": 10,
"exclude_seen": true} for a top-k list or {"user_id": "196", "item_id": "242"} for a rating (JSON out, as luodi)."""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).parent
S = json.loads((HERE / "preprocess.json").read_text())
SESSION = ort.InferenceSession(str(HERE / "recommender.onnx"), providers=["CPUExecutionProvider"])
USERS, ITEMS = ({v: n for n, v in enumerate(S[k])} for k in ("user_ids", "item_ids"))
BONUS = S["popularity"] * np.log1p(np.array(S["item_counts"], float))  # how likely an item is picked at all


def ratings(u: int, items: list) -> np.ndarray:  # predicted ratings of one user (-1: unknown) for these items
    return SESSION.run(None, {"user": np.array([u], np.int64), "item": np.array(items, np.int64)})[0][0]


def predict(req: dict) -> dict:
    user = str(req["user_id"]).strip()
    u = USERS.get(user, -1)
    if req.get("item_id") is not None:
        item = str(req["item_id"]).strip()
        r = np.clip(ratings(u, [ITEMS.get(item, -1)])[0], S["min"], S["max"])
        return {"user_id": user, "item_id": item, "rating": round(float(r), 4),
                "cold_start": u < 0 or item not in ITEMS}
    rating = ratings(u, list(range(len(ITEMS)))) if u >= 0 else np.array(S["cold_scores"])
    s = rating + BONUS if u >= 0 else rating.copy()
    if u >= 0 and req.get("exclude_seen", True):
        s[S["seen"][u]] = -np.inf
    k = min(req.get("k", 10), int(np.isfinite(s).sum()))
    top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
    top = top[np.argsort(-s[top])]
    items = [{"item_id": S["item_ids"][j], "score": round(float(np.clip(rating[j], S["min"], S["max"])), 4)}
             for j in top.tolist()]
    for row in items:
        row.update({"name": S["item_names"][row["item_id"]]} if row["item_id"] in S["item_names"] else {})
    return {"user_id": user, "items": items, "cold_start": u < 0}


if __name__ == "__main__":
    for line in sys.argv[1:] or (line for line in sys.stdin if line.strip()):
        print(json.dumps(predict(json.loads(line))))
