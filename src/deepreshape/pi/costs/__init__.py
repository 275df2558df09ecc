"""What secure inference costs, without running it: Cheetah's HE counts (`he`), the
calibrated per-layer cost model (`costmodel`) and the link term (`linkcost`). Light: no
SPU import, so design and planning use it."""
