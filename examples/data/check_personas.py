"""Quality checks for the bundled sample persona set (stdlib only; stricter than the SDK validator).

Usage: python examples/data/check_personas.py examples/data/personas.jsonl
Checks 30 posts per persona, captions of 80-200 words, all 8 categories per post, the 35/25/25/15 type mix.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter

CATEGORIES = ["foreground", "background", "objects", "materials", "lighting", "actions",
              "environment", "appearance"]
TYPES = {"activity", "appreciation", "shared", "selfie"}
DEMO_KEYS = {"age": int, "gender": str, "country": str, "city": str, "ethnicity": str,
             "occupation": str, "interests": list, "personality": list, "social_media_tone": str}


def check_persona(p: dict, where: str) -> list[str]:
    errs: list[str] = []
    if not isinstance(p.get("persona_id"), str) or not re.fullmatch(r"p\d\d_[a-z0-9_]+", p["persona_id"]):
        errs.append(f"{where}: persona_id must look like p01_kyoto_ceramicist")
    d = p.get("demographics", {})
    for k, t in DEMO_KEYS.items():
        if not isinstance(d.get(k), t):
            errs.append(f"{where}: demographics.{k} must be {t.__name__}")
    if not isinstance(p.get("summary"), str) or len(p["summary"].split()) < 25:
        errs.append(f"{where}: summary must be 2-4 sentences (>= 25 words)")
    prefs = p.get("preferences", [])
    if not (isinstance(prefs, list) and 8 <= len(prefs) <= 20):
        errs.append(f"{where}: preferences must be a list of 8-20 strings")
    pel = p.get("elements", {})
    for c in CATEGORIES:
        v = pel.get(c)
        if not (isinstance(v, list) and 5 <= len(v) <= 20 and all(isinstance(x, str) and x for x in v)):
            errs.append(f"{where}: elements.{c} must list 5-20 phrases")
    posts = p.get("posts", [])
    if len(posts) != 30:
        errs.append(f"{where}: needs exactly 30 posts, has {len(posts)}")
    ids = Counter(q.get("post_id") for q in posts)
    dup = [k for k, n in ids.items() if n > 1]
    if dup:
        errs.append(f"{where}: duplicate post_id {dup}")
    types = Counter(q.get("type") for q in posts)
    for i, q in enumerate(posts):
        w = f"{where} post[{i}] ({q.get('post_id')})"
        if q.get("type") not in TYPES:
            errs.append(f"{w}: type must be one of {sorted(TYPES)}")
        cap = q.get("caption", "")
        n = len(cap.split()) if isinstance(cap, str) else 0
        if not 80 <= n <= 200:
            errs.append(f"{w}: caption has {n} words, needs 80-200")
        el = q.get("elements", {})
        for c in CATEGORIES:
            v = el.get(c)
            if not (isinstance(v, list) and 1 <= len(v) <= 5 and all(isinstance(x, str) and x.strip() for x in v)):
                errs.append(f"{w}: elements.{c} must list 1-5 non-empty phrases")
            elif any(len(x.split()) > 8 for x in v):
                errs.append(f"{w}: elements.{c} phrases must be short (<= 8 words)")
        if "image" not in q:
            errs.append(f"{w}: needs \"image\": null")
    if posts:
        for t, lo, hi in [("activity", 8, 13), ("appreciation", 5, 10), ("shared", 5, 10), ("selfie", 3, 7)]:
            if not lo <= types.get(t, 0) <= hi:
                errs.append(f"{where}: {types.get(t, 0)} '{t}' posts, want {lo}-{hi} (35/25/25/15 mix)")
    return errs


def main(paths: list[str]) -> int:
    bad = 0
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    p = json.loads(line)
                except json.JSONDecodeError as e:
                    print(f"{path}:{ln}: invalid JSON: {e}")
                    bad += 1
                    continue
                errs = check_persona(p, f"{path}:{ln}")
                for e in errs:
                    print(e)
                bad += len(errs)
                if not errs:
                    words = [len(q["caption"].split()) for q in p["posts"]]
                    print(f"{path}:{ln}: OK {p['persona_id']} posts=30 mean_caption_words={sum(words)/30:.0f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
