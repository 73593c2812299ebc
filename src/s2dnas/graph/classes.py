"""Channel classes: which channel dimensions are tied, and where ties and slices cut them.

A class is a union-find set of channel dimensions that must share one partition across stages.
A tie between two dimensions whose layouts differ (a gate over concatenated branches, a slice
added to a conv output) first *cuts* the classes involved into sub-classes (hard cuts) until the
ranges line up; a channel slice only records a *soft* cut, a range that is shared out across
stages on its own. :class:`ClassBook` holds that state for one analysis.
"""
from __future__ import annotations

import math

from torch import fx

from s2dnas.graph.channels import INPUT, Dim, Part
from s2dnas.graph.trace import unsupported

__all__ = ["ClassBook"]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def add(self, x: int) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        self.parent[drop] = keep
        return keep


class ClassBook:
    """The channel classes of one analysis: sizes, granularity, ties (union-find) and cuts."""

    def __init__(self, input_channels: int) -> None:
        self.input_channels = input_channels
        self.uf = _UnionFind()
        self.sizes: dict[int, int] = {}
        self.granularity: dict[int, int] = {}
        self.cuts: dict[int, set[int]] = {}  # soft cuts (slices): ranges shared out separately
        self.children: dict[int, list[tuple[int, int, int]]] = {}  # hard cuts (ties): root -> sub-classes
        self.next_id = 0

    def new_class(self, size: int) -> int:
        """A new class of ``size`` channels; returns its id."""
        cid = self.next_id
        self.next_id += 1
        self.uf.add(cid)
        self.sizes[cid] = size
        self.granularity[cid] = 1
        self.cuts[cid] = set()
        return cid

    def size_of(self, cls: int) -> int:
        """Channels of class ``cls`` (of its root, once tied; the image's for ``INPUT``)."""
        if cls == INPUT:
            return self.input_channels
        return self.sizes[self.uf.find(cls)]

    def hi(self, part: Part) -> int:
        """Where ``part`` ends (``hi == -1`` resolved to the end of its class)."""
        return self.size_of(part.cls) if part.hi < 0 else part.hi

    def features(self, dim: Dim) -> int:
        """Number of features of ``dim`` (channels times their repeats)."""
        return sum((self.hi(p) - p.lo) * p.repeat for p in dim.parts)

    def expand(self, part: Part) -> list[Part]:
        """``part`` as ranges of leaf classes (classes that ties have not cut further)."""
        hi = self.hi(part)
        root = part.cls if part.cls < 0 else self.uf.find(part.cls)
        if root < 0 or root not in self.children:
            return [Part(root, part.repeat, part.lo, hi)]
        out: list[Part] = []
        for child, lo, chi in self.children[root]:
            a, b = max(lo, part.lo), min(chi, hi)
            if a < b:
                out.extend(self.expand(Part(child, part.repeat, a - lo, b - lo)))
        return out

    def cut(self, cls: int, at: int, node: fx.Node) -> None:
        """Split class ``cls`` at channel ``at`` into two sub-classes (a tie needs the ranges whole)."""
        root = self.uf.find(cls)
        size = self.sizes[root]
        if at <= 0 or at >= size:
            return
        if root in self.children:
            for child, lo, hi in self.children[root]:
                if lo < at < hi:
                    self.cut(child, at - lo, node)
            return
        g = self.granularity[root]
        if at % g:
            raise unsupported(node, f"it ties channels across a group of a grouped conv (groups of {g})")
        first, second = self.new_class(at), self.new_class(size - at)
        self.granularity[first] = self.granularity[second] = g
        self.cuts[first] = {c for c in self.cuts[root] if 0 < c < at}
        self.cuts[second] = {c - at for c in self.cuts[root] if at < c < size}
        self.children[root] = [(first, 0, at), (second, at, size)]

    def soft_cut(self, cls: int, at: int) -> None:
        """Record that a slice begins or ends at channel ``at`` of ``cls`` (ranges shared out apart)."""
        root = self.uf.find(cls)
        for child, lo, hi in self.children.get(root, ()):
            if lo < at < hi:
                self.soft_cut(child, at - lo)
                return
        if root not in self.children and 0 < at < self.sizes[root]:
            self.cuts[root].add(at)

    def leaves(self, dim: Dim) -> list[Part]:
        """The parts of ``dim`` as ranges of leaf classes."""
        return [q for p in dim.parts for q in self.expand(p)]

    def tie(self, a: Dim, b: Dim, node: fx.Node) -> Dim:
        """Tie ``a`` and ``b`` channel by channel (cutting classes until their ranges line up)."""
        if a == b:
            return a
        if a.has_input or b.has_input:
            raise unsupported(node, "it combines the image input with features channel by channel; add a "
                                     "conv before combining")
        if self.features(a) != self.features(b):
            raise unsupported(node, "it combines tensors of different widths")
        for _ in range(64):  # cut both sides until their ranges line up as whole leaf classes
            pa, pb = self.leaves(a), self.leaves(b)
            changed = False
            for parts in (pa, pb):
                for p in parts:
                    if p.lo > 0 or p.hi < self.size_of(p.cls):
                        self.cut(p.cls, p.lo, node)
                        self.cut(p.cls, p.hi, node)
                        changed = True
            if changed:
                continue
            bounds_a, bounds_b = _bounds(pa), _bounds(pb)
            for parts, theirs in ((pa, bounds_b), (pb, bounds_a)):
                offset = 0
                for p in parts:
                    width = (p.hi - p.lo) * p.repeat
                    for at in theirs:
                        if offset < at < offset + width:
                            if (at - offset) % p.repeat:
                                raise unsupported(node, "it combines tensors whose channel layouts differ")
                            self.cut(p.cls, p.lo + (at - offset) // p.repeat, node)
                            changed = True
                    offset += width
            if not changed:
                break
        pa, pb = self.leaves(a), self.leaves(b)
        if len(pa) != len(pb):  # pragma: no cover - the loop above lines them up
            raise unsupported(node, "it combines tensors whose channel layouts differ")
        for qa, qb in zip(pa, pb):
            if qa.repeat != qb.repeat or self.size_of(qa.cls) != self.size_of(qb.cls):
                raise unsupported(node, "it combines tensors whose channel layouts differ")
            ra, rb = self.uf.find(qa.cls), self.uf.find(qb.cls)
            root = self.uf.union(ra, rb)
            self.granularity[root] = math.lcm(self.granularity[ra], self.granularity[rb])
            self.cuts[root] = self.cuts[ra] | self.cuts[rb]
        return a

    def slice_dim(self, dim: Dim, start: int, stop: int, node: fx.Node) -> Dim:
        """Features ``[start, stop)`` of ``dim``; records where classes are cut."""
        parts: list[Part] = []
        offset = 0
        for p in dim.parts:
            width = (self.hi(p) - p.lo) * p.repeat
            a, b = max(start, offset), min(stop, offset + width)
            if a < b:
                if (a - offset) % p.repeat or (b - offset) % p.repeat:
                    raise unsupported(node, "it cuts through the features of one channel (a slice of a "
                                             "flattened or shuffled tensor); slice before flattening")
                lo, hi = p.lo + (a - offset) // p.repeat, p.lo + (b - offset) // p.repeat
                if p.cls == INPUT and (lo, hi) != (0, self.hi(p)):
                    raise unsupported(node, "it takes some of the image's channels; every stage reads the whole "
                                             "image")
                if p.cls >= 0:
                    self.soft_cut(p.cls, lo)
                    self.soft_cut(p.cls, hi)
                parts.append(Part(p.cls, p.repeat, lo, hi))
            offset += width
        if not parts:
            raise unsupported(node, "it takes no channels")
        return Dim(tuple(parts))

    def resolve(self, dim: Dim) -> Dim:
        """``dim`` in terms of its final leaf classes."""
        return Dim(tuple(self.leaves(dim)))

    def leaf_cuts(self, leaf: int) -> set[int]:
        """The soft cuts (slices) that fall inside leaf class ``leaf``, from every class tied to it."""
        return self.cuts[leaf]


def _bounds(parts: list[Part]) -> set[int]:
    """Feature offsets at which ``parts`` (leaf ranges) begin."""
    out, offset = set(), 0
    for p in parts:
        out.add(offset)
        offset += (p.hi - p.lo) * p.repeat
    return out
