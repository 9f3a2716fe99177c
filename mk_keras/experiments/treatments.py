"""The treatment table of transfer sweeps (Yosinski et al. 2014 notation: AnB = n layers from A, trained on B).

Adding a treatment is one `Treatment(...)` row here; a treatment that needs something `train` does not do
by itself (e.g. an `init_hook`) also needs a line in `mk_keras.experiments.sweep.train_kwargs`.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Treatment:
    """One row of the treatment table.

    data: the dataset the run trains on ("A" or "B"). source: where copied filters come from: None (no
    copy), "A" / "B" (the base model of this model and seed), "cross" (base A of `cross_source`).
    uses_n: whether the run has a transfer depth n. order / freeze: passed to `train`. master_keys: the n
    layers get frozen master-key kernels (`train(source="master_keys")`, depthwise arms only), fitted to the
    filters of the `source` base when it is set, else round-robin. control: "shuffle" (the copied filters'
    spatial positions permuted per channel, `train(kernel_transform="shuffle")`) or "delta" (identity filters,
    `train(source="delta")`, depthwise arms only): controls that keep the statistics of learned filters but not
    their structure, or do no spatial filtering at all.
    """

    name: str
    meaning: str
    data: str
    source: str | None = None
    uses_n: bool = True
    order: str = "first"
    freeze: bool = True
    master_keys: bool = False
    control: str | None = None

    @property
    def is_base(self):
        return not self.uses_n

    @property
    def depthwise_only(self):
        """Runs only on depthwise arms (its filters are made per channel: master keys, identity filters)."""
        return self.master_keys or self.control == "delta"


TREATMENTS = {t.name: t for t in (
    Treatment("baseA", "base model trained on A", "A", uses_n=False),
    Treatment("baseB", "base model trained on B (the denominator of relative accuracy)", "B", uses_n=False),
    Treatment("AnB", "layers 1..n copied from baseA and frozen; the rest re-initialised and trained on B", "B",
              "A"),
    Treatment("BnB", "layers 1..n copied from baseB and frozen; the rest re-initialised and trained on B "
              "(control)", "B", "B"),
    Treatment("AnB+", "layers 1..n copied from baseA, all layers trained on B (fine-tuning)", "B", "A",
              freeze=False),
    Treatment("BnB+", "layers 1..n copied from baseB, all layers trained on B", "B", "B", freeze=False),
    Treatment("reversed", "layers n..L copied from baseA and frozen, layers 1..n-1 re-initialised and trained "
              "on B", "B", "A", order="last"),
    Treatment("random_frozen", "layers 1..n left at their random initialisation and frozen, the rest trained "
              "on B (control)", "B"),
    Treatment("shuffled", "layers 1..n copied from baseA with the spatial positions of each filter permuted (per "
              "channel, seeded by the run's seed) and frozen; the rest trained on B (control: same weight statistics, "
              "structure destroyed)", "B", "A", control="shuffle"),
    Treatment("delta", "layers 1..n set to the identity filter (1 at the centre tap) and frozen; the rest trained "
              "on B (control: no spatial filtering; depthwise only)", "B", control="delta"),
    Treatment("cross", "layers 1..n copied from baseA of --cross_source (another architecture, kernels and "
              "channels mapped) and frozen; the rest trained on B", "B", "cross"),
    Treatment("master_keys", "layers 1..n given frozen master-key kernels (round-robin over channels) with a "
              "trainable per-channel shift; the rest trained on B (depthwise only)", "B", master_keys=True),
    Treatment("master_keys_fit", "as master_keys, each channel's key and sign fitted to baseA's filter, the shift "
              "starting at the fit's offset (depthwise only)", "B", "A", master_keys=True),
)}
BASES = {"A": "baseA", "B": "baseB", "cross": "baseA"}
