"""Persona memory through LangGraph's ``BaseStore`` interface, so LangGraph apps read and write it the
standard way (``get``/``put``/``search``/``delete``/``list_namespaces`` and their async twins).

Layout (one namespace per persona)::

    ("personas", persona_id)            key "profile"  -> the persona without its posts
    ("personas", persona_id, "posts")   key post_id    -> one post (caption, type, elements, image)

Every write goes through the persona store's crash-safe upsert (only changed posts are embedded; a crash
leaves the old or the new version). The puts of one ``batch`` are grouped per persona into one upsert, and,
as in LangGraph's own stores, the reads of a batch see the state before its writes. ``put`` of a post for an
unknown persona creates the persona; ``delete`` of ``"profile"`` deletes the whole persona. ``search`` with
a ``query`` ranks by cosine to the query embedding (posts by caption, the profile by its persona card), with
the store's own embedder. The persona store keeps no timestamps: items carry the Unix epoch.

Example:
    >>> store = PersonaMemoryStore(InMemoryPersonaStore(embedder))                   # doctest: +SKIP
    >>> store.put(("personas", "ana"), "profile", {"summary": "Cyclist in Lisbon."})  # doctest: +SKIP
    >>> store.put(("personas", "ana", "posts"), "p1", {"caption": "A tram at dusk."})  # doctest: +SKIP
    >>> [i.key for i in store.search(("personas", "ana"), query="tram")]            # doctest: +SKIP
    ['p1', 'profile']
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from vptt.core.errors import PersonaNotFoundError
from vptt.core.models import Persona
from vptt.core.personas import parse_persona
from vptt.stores.base import PersonaStore

ROOT = "personas"
PROFILE = "profile"
POSTS = "posts"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LAYOUT = ('namespaces are ("personas", persona_id) with key "profile", and ("personas", persona_id, "posts") '
           "with one key per post_id")


def _parse(namespace: tuple[str, ...], key: str | None = None) -> tuple[str, bool]:
    """``(persona_id, is_posts)`` of a namespace; anything else is an :class:`InvalidNamespaceError`."""
    if len(namespace) == 2 and namespace[0] == ROOT and namespace[1]:
        if key is not None and key != PROFILE:
            raise InvalidNamespaceError(f"key {key!r} in {namespace}: the persona namespace holds only "
                                        f"'profile'; {_LAYOUT}")
        return namespace[1], False
    if len(namespace) == 3 and namespace[0] == ROOT and namespace[1] and namespace[2] == POSTS:
        return namespace[1], True
    raise InvalidNamespaceError(f"namespace {namespace} is not persona memory; {_LAYOUT}")


def _matches(value: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    """LangGraph filter semantics: equality, or ``{"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": x}``."""
    ops = {"$eq": lambda a, b: a == b, "$ne": lambda a, b: a != b, "$gt": lambda a, b: a > b,
           "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}
    for k, want in (flt or {}).items():
        have = value.get(k)
        if isinstance(want, dict) and want and all(op in ops for op in want):
            try:
                if not all(ops[op](have, x) for op, x in want.items()):
                    return False
            except TypeError:
                return False
        elif have != want:
            return False
    return True


class PersonaMemoryStore(BaseStore):
    """A LangGraph ``BaseStore`` over a :class:`~vptt.stores.base.PersonaStore` (see the module docs).

    Args:
        store: the persona store (in-memory, embedded Chroma or a Chroma server).
    """

    def __init__(self, store: PersonaStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"PersonaMemoryStore({self.store!r})"

    # -- BaseStore ----------------------------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations: reads first (in order), then the puts grouped per persona."""
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        puts: dict[str, list[PutOp]] = {}
        for i, op in enumerate(ops):
            if isinstance(op, GetOp):
                results[i] = self._get(op)
            elif isinstance(op, SearchOp):
                results[i] = self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op)
            elif isinstance(op, PutOp):
                pid, _ = _parse(op.namespace, op.key)
                puts.setdefault(pid, []).append(op)
            else:
                raise TypeError(f"unknown store operation {type(op).__name__}")
        for pid, group in puts.items():
            self._apply(pid, group)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch` (runs in a worker thread: the persona store is synchronous)."""
        return await asyncio.to_thread(self.batch, list(ops))

    # -- reads --------------------------------------------------------------------------------------------
    def _persona(self, pid: str) -> Persona | None:
        try:
            return self.store.get(pid)
        except PersonaNotFoundError:
            return None

    def _get(self, op: GetOp) -> Item | None:
        pid, is_posts = _parse(op.namespace, op.key)
        persona = self._persona(pid)
        if persona is None:
            return None
        if not is_posts:
            return _item(op.namespace, PROFILE, _profile(persona))
        post = next((p for p in persona.posts if p.post_id == op.key), None)
        return None if post is None else _item(op.namespace, op.key, post.model_dump(mode="json"))

    def _candidates(self, prefix: tuple[str, ...]) -> Iterator[tuple[str, tuple[bool, ...]]]:
        """``(persona_id, (posts?, ...))``: each persona under ``prefix`` once, with its namespaces there."""
        if prefix[:1] not in ((), (ROOT,)):
            return
        kinds = ((False,) if len(prefix) <= 2 else ()) + \
            ((True,) if len(prefix) <= 2 or prefix[2:] == (POSTS,) else ())
        if not kinds:
            return
        for pid in [prefix[1]] if len(prefix) >= 2 else self.store.list_ids():
            yield pid, kinds

    def _search(self, op: SearchOp) -> list[SearchItem]:
        q = self.store.embedder.embed_one(op.query) if op.query else None
        found: list[SearchItem] = []
        for pid, kinds in self._candidates(tuple(op.namespace_prefix)):
            mem = None
            if q is None:  # read each persona once, for all its namespaces
                persona = self._persona(pid)
                if persona is None:
                    continue
            else:
                try:
                    mem = self.store.embedded(pid)
                except PersonaNotFoundError:
                    continue
                persona = mem.persona
            for is_posts in kinds:
                scores = None
                if mem is not None and q is not None:
                    scores = (mem.caption_embs @ q) if is_posts else np.array([float(mem.card_emb @ q)])
                entries: list[tuple[tuple[str, ...], str, dict[str, Any]]]
                if is_posts:
                    entries = [((ROOT, pid, POSTS), p.post_id, p.model_dump(mode="json")) for p in persona.posts]
                else:
                    entries = [((ROOT, pid), PROFILE, _profile(persona))]
                for j, (ns, key, value) in enumerate(entries):
                    if _matches(value, op.filter):
                        score = None if scores is None else float(scores[j])
                        found.append(SearchItem(ns, key, value, EPOCH, EPOCH, score=score))
        if q is not None:
            found.sort(key=lambda it: -(it.score or 0.0))
        return found[op.offset:op.offset + op.limit]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        spaces: list[tuple[str, ...]] = []
        for pid in self.store.list_ids():
            spaces += [(ROOT, pid), (ROOT, pid, POSTS)]
        for cond in op.match_conditions or ():
            n = len(cond.path)

            def fits(ns: tuple[str, ...], path: tuple[str, ...] = tuple(cond.path), suffix: bool =
                     cond.match_type == "suffix") -> bool:
                part = ns[-n:] if suffix else ns[:n]
                return len(ns) >= n and all(p == "*" or p == s for p, s in zip(path, part))
            spaces = [ns for ns in spaces if fits(ns)]
        if op.max_depth is not None:
            spaces = list(dict.fromkeys(ns[:op.max_depth] for ns in spaces))
        return spaces[op.offset:op.offset + op.limit]

    # -- writes -------------------------------------------------------------------------------------------
    def _apply(self, pid: str, group: list[PutOp]) -> None:
        persona = self._persona(pid)
        data: dict[str, Any] = persona.model_dump(mode="json") if persona is not None else {"persona_id": pid}
        posts: dict[str, dict[str, Any]] = {p["post_id"]: p for p in data.get("posts", [])}
        delete_persona = False
        for op in group:
            _, is_posts = _parse(op.namespace, op.key)
            if not is_posts and op.value is None:
                delete_persona, data, posts = True, {"persona_id": pid}, {}
            elif not is_posts:
                value = dict(op.value)  # type: ignore[arg-type]
                if value.pop("persona_id", pid) != pid:
                    raise InvalidNamespaceError(f"profile of {pid!r} names another persona_id")
                value.pop("posts", None)
                data = {"persona_id": pid, **value}
                delete_persona = False
            elif op.value is None:
                posts.pop(op.key, None)
            else:
                posts[op.key] = {**dict(op.value), "post_id": op.key}  # validated with the persona below
                delete_persona = False
        if delete_persona and not posts:
            self.store.delete(pid)
            return
        new = parse_persona({**data, "posts": list(posts.values())}, file=f"store put {pid!r}")
        self.store.upsert(new)


def _profile(persona: Persona) -> dict[str, Any]:
    return persona.model_dump(mode="json", exclude={"posts"})


def _item(namespace: tuple[str, ...], key: str, value: dict[str, Any]) -> Item:
    return Item(value=value, key=key, namespace=namespace, created_at=EPOCH, updated_at=EPOCH)
