"""Short tags that say what changed a network's ReLU slots, read from the slots alone.

``resnet18 +SNL pixel 3,000``, ``hrn-5x7x2x +cull s1,s4``, ``resnet18 +thin +reuse x2``:
what `NetSpec.short_name` appends to a network's name in tables and legends. Which method
made a run is its config's tag (`deepreshape.methods`); these tags describe the network.
"""

from __future__ import annotations

from deepreshape.spec import NetSpec, relu_slots


def change_tags(spec: NetSpec) -> list[str]:
    """Short tags naming what changed the spec's slots, recognized from the slots alone.

    SNL masks: ``+SNL pixel|channel R`` with R the network's ReLUs (the zeroed and untouched
    slots SNL leaves are part of it). Otherwise ``+cull sK,...`` for stages with no ReLU left,
    ``+thin`` when every other stage lost exactly the alternate slots DeepReDuce's thinning
    linearizes (positions 1, 3, ... of the stage, stem excluded: relu2, as its released
    models; ``+thin relu1`` for positions 0, 2, ...), ``+linearized N slots``
    for any other identity slots, and ``+reuse xN`` for ReLU-reuse.
    """
    if not spec.slots:
        return []
    layout = relu_slots(spec)
    kinds = {s.address: spec.slot_kind(s.address) for s in layout}
    masks = sorted({k.granularity for k in kinds.values() if k.kind == "mask"})
    if masks:
        relus = sum(kinds[s.address].relus(s.channels, s.height, s.width) for s in layout)
        return [f"+SNL {'+'.join(masks)} {relus:,}"]
    by_stage: dict[int, list[str]] = {}
    for s in layout:
        by_stage.setdefault(s.stage, []).append(s.address)
    linear = {a for a, k in kinds.items() if k.kind == "identity"}
    culled = [k for k, addrs in by_stage.items() if set(addrs) <= linear]
    tags = ["+cull " + ",".join(f"s{k}" for k in culled)] if culled else []
    live = {k: [a for a in addrs if not a.startswith("stem.")]
            for k, addrs in by_stage.items() if k not in culled}
    rest = linear - {a for k in culled for a in by_stage[k]}
    if rest:
        def thinned(start: int) -> bool:
            return all(set(body[start::2]) == linear & set(by_stage[k]) for k, body in live.items())

        tags.append("+thin" if thinned(1) else "+thin relu1" if thinned(0)
                    else f"+linearized {len(rest)} slot{'s' * (len(rest) > 1)}")
    factors = sorted({k.factor for k in kinds.values() if k.kind == "reuse"})
    if factors:
        tags.append("+reuse x" + ",".join(map(str, factors)))
    return tags
