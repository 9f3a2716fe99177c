"""docs/findings.md: every claim of the paper tested at CPU scale (`make reproduce`).

Each `Claim` names its presets (flags/claims/<preset>.flags, trained by `mk-sweep` into runs/claims/<preset>), the
question, why the setup is what it is, the published reference, and its `Check`s: a paired comparison X − Y
(top-1, percentage points, per seed; mean and Student-t 95 % CI over the seeds) with the direction the paper
predicts. The verdict is computed from the tests by the rules in `RULES`, never written by hand, so a rerun
with other results gives another verdict.

    python -m mk_keras.experiments.findings --runs=runs/claims --out=docs/findings.md
    python -m mk_keras.experiments.findings --list_presets     # the presets, in the order make reproduce runs them
"""

import dataclasses
import os
import shutil
import sys

from mk_keras.experiments import results, stats
from mk_keras.experiments.treatments import TREATMENTS

# A "no loss" prediction holds when the whole 95 % CI of X − Y lies above -MARGIN_PP (set before any result).
MARGIN_PP = 2.0
FIGURES = ("relative_accuracy.png", "reversed.png", "retention.png", "paired_differences.png")
RULES = (
    f"A test's outcome: **higher** / **lower** when the 95 % CI of X − Y excludes 0; **no loss** when the whole "
    f"CI lies above −{MARGIN_PP:g} pp (a margin fixed before any run); otherwise **unclear**. A claim is "
    "**supported** when every test comes out as predicted, **contradicted** when any test comes out opposite to "
    "the prediction (lower where higher or no loss was predicted, higher where lower was predicted), and "
    "**not shown** otherwise. A control test (the filters under test against random, shuffled or identity filters) "
    "that is not **higher** means the setup cannot credit the result to the filters themselves."
)

CHOICES = """## How the setups were chosen

Fixed before any claim run was looked at, from cost and from what a test needs to be able to fail; not tuned
afterwards, with two exceptions, both decided before any transfer result of the preset concerned was read:

- **AlexNet initialisation.** With the Caffe Gaussian initialisation Yosinski et al. used (std 0.01), the
  quarter-width AlexNet's loss stayed at chance for 200 steps in 7 of its 10 bases (5 seeds of A and of B, on
  2026-12-01), and a lower learning rate did not help; `alexnet_small_cifar` therefore starts from He-normal
  weights and zero biases. Chosen on whether the bases train at all; the runs with the old initialisation were
  deleted.
- **Evaluation on A in the cross-domain preset** uses 200 test images per class (Animal-MNIST has only 200).

- **Where a filter effect can show.** The quickstart (B = 4 accessory classes, 300 images per class) and a probe
  with 1,000 garment images per class both gave random frozen depthwise filters the accuracy of learned ones, so
  neither could credit anything to the filters. Frozen filters should matter most where the target is small and
  hard, so B here is the 6 garment classes (4 of them look-alike upper-body garments) with 50 training images per
  class, and A the accessories with 1,000 per class. Every claim has a control (random_frozen, shuffled, delta),
  and a claim about filters counts only where the transferred filters beat it.
- **Same compute per run.** Every run trains 200 steps of batch 32 (600 in the larger-source preset, whose largest
  source has 24,000 images), AdamW with the quickstart's learning rate; evaluation on 500 test images per class.
- **Models at CPU scale.** ConvNeXt-micro (5 depthwise layers, 0.59 M parameters), ResNet-10 (3/8 width) and
  ResNet-18/34/50, AlexNet and MobileNetV2 at reduced width (`*_w16_cifar`, `alexnet_small_cifar`,
  `mobilenetv2_035_cifar`): the full-width CIFAR ResNet-18 took about 70x ConvNeXt-micro's step time on this
  machine (measured on 2026-11-30, loaded), too slow for 5 seeds.
- **Seeds and statistics.** 5 seeds; at one seed every run of a model starts from the same initial weights and
  sees the same data order, so differences are paired per seed. With 5 seeds the t-interval is wide (t = 2.78):
  differences under about one point are usually **unclear**, and a test with many depths will sometimes exclude
  0 by chance.
- **Depths.** First, middle and last layer (spread:3) rather than every depth, for cost; the deepest n is the one
  the claims are about.
"""


@dataclasses.dataclass(frozen=True)
class Side:
    """Rows of one preset: `treatment`, optionally one `kind`, one `n` (an int or "last": the largest n of that
    model and kind in the preset), one `source_size`, one `model`; `label` names it in tables."""

    preset: str
    treatment: str
    kind: str | None = None
    n: object = None
    source_size: int | None = None
    model: str | None = None
    label: str | None = None

    def name(self):
        return self.label or self.treatment


@dataclasses.dataclass(frozen=True)
class Check:
    """X − Y with the paper's predicted outcome ("higher", "lower", "no_loss") or None (reported only);
    `control`: a test of the setup's power (transferred against random/shuffled/identity filters)."""

    x: Side
    y: Side
    predicted: str | None
    control: bool = False


@dataclasses.dataclass(frozen=True)
class Claim:
    key: str
    title: str
    presets: tuple
    question: str
    setup: str
    reference: str
    tests: tuple


def _base(preset):
    return Side(preset, "baseB", label="baseB")


def _t(preset, treatment, kind=None, n="last", **kw):
    return Side(preset, treatment, kind=kind, n=n, **kw)


YOSINSKI = ("Yosinski et al. 2014 (ImageNet random halves, AlexNet; baseB top-1 0.6251): AnB/baseB at n = 1..7: "
            "1.005, .998, .990, .959, .925, .929, .868; BnB top-1 .6267, .6235, .6211, .6048, .5935, .6188, .6232; "
            "AnB+ .6373, .6358, .6426, .6398, .6446, .6460, .6465; man-made → natural (natural target, base .6534): "
            ".6571, .6506, .6250, .5824, .5219, .4851, .3990.")
MK_PAPER = "Babaiee et al., AAAI-25 (arXiv 2412.16751), on ImageNet-1k at 224 px"

CLAIMS = (
    Claim("master_keys", "Master keys: 8 published filters replace learned depthwise filters", ("master_keys",),
          "Do the 8 published master-key filters, frozen with a learnable per-channel shift in every depthwise "
          "layer, train as well as learned filters, and better than filters that carry no structure?",
          "ConvNeXt-micro, all 5 depthwise layers (n = 5); keys round-robin over channels (`master_keys`) or "
          "fitted to baseA's filters (`master_keys_fit`); transferred filters (AnB), the learned model (baseB) "
          "and the controls random_frozen, shuffled, delta (identity).",
          "arXiv 2509.11711: the 8 frozen keys with a learnable shift reach over 80 % ImageNet top-1 in "
          "ConvNeXt-style networks (paper's claim; its exact figures are not carried here).",
          (Check(_t("master_keys", "master_keys"), _base("master_keys"), "no_loss"),
           Check(_t("master_keys", "master_keys"), _t("master_keys", "random_frozen"), "higher", True),
           Check(_t("master_keys", "master_keys"), _t("master_keys", "shuffled"), "higher", True),
           Check(_t("master_keys", "master_keys"), _t("master_keys", "delta"), "higher", True),
           Check(_t("master_keys", "master_keys_fit"), _base("master_keys"), "no_loss"),
           Check(_t("master_keys", "AnB"), _t("master_keys", "master_keys"), None))),
    Claim("fig3", "Fig. 3: depthwise filters stay general at every depth, regular conv filters do not",
          ("fig3_general_filters",),
          "Copy the first n filter layers from a model trained on A, freeze them and train the rest on B: does a "
          "DS-CNN's depthwise stack keep baseB's accuracy at every n, while a regular CNN loses accuracy at deep n? "
          "And do learned filters beat random and shuffled ones, i.e. can the setup see a filter effect?",
          "ConvNeXt-micro (5 depthwise layers) and ResNet-10 (9 conv layers), n = first, middle, last; AnB, BnB "
          "and the controls random_frozen and shuffled.",
          f"{MK_PAPER}: depthwise AnB keeps about baseB's accuracy at every n, also man-made → natural; ResNet "
          f"conv AnB drops at deep n. {YOSINSKI}",
          (Check(_t("fig3_general_filters", "AnB", "depthwise"), _base("fig3_general_filters"), "no_loss"),
           Check(_t("fig3_general_filters", "AnB", "conv"), _base("fig3_general_filters"), "lower"),
           Check(_t("fig3_general_filters", "AnB", "depthwise"), _t("fig3_general_filters", "random_frozen",
                                                                     "depthwise"), "higher", True),
           Check(_t("fig3_general_filters", "AnB", "depthwise"), _t("fig3_general_filters", "shuffled", "depthwise"),
                "higher", True),
           Check(_t("fig3_general_filters", "AnB", "conv"), _t("fig3_general_filters", "random_frozen", "conv"),
                None, True),
           Check(_t("fig3_general_filters", "AnB", "depthwise", n=None), _t("fig3_general_filters", "BnB",
                                                                            "depthwise", n=None), None))),
    Claim("pointwise", "Pointwise filters transfer worse than depthwise filters", ("pointwise_vs_depthwise",),
          "Frozen transferred 1x1 (pointwise) layers against frozen transferred depthwise layers of the same "
          "ConvNeXt-micro bases.",
          "ConvNeXt-micro, depthwise n = 1, 3, 5 and pointwise n = 1, 6, 10 (of 10); AnB, BnB, random_frozen.",
          f"{MK_PAPER}: pointwise transfer is harder to optimise and loses accuracy where depthwise does not.",
          (Check(_t("pointwise_vs_depthwise", "AnB", "pointwise", label="AnB (pointwise)"),
                 _t("pointwise_vs_depthwise", "AnB", "depthwise", label="AnB (depthwise)"), "lower"),
           Check(_t("pointwise_vs_depthwise", "AnB", "pointwise"), _base("pointwise_vs_depthwise"), "lower"),
           Check(_t("pointwise_vs_depthwise", "AnB", "pointwise"), _t("pointwise_vs_depthwise", "random_frozen",
                                                                     "pointwise"), "higher", True))),
    Claim("cross_domain", "Cross-domain: depthwise filters from another domain", ("cross_domain",
                                                                                   "fig3_general_filters"),
          "Do depthwise filters learned on animal drawings (Animal-MNIST) serve garment photos (Fashion-MNIST) "
          "as well as filters from the same domain (accessories), and better than the controls?",
          "ConvNeXt-micro, n = 1 and 5; A = Animal-MNIST (400 per class, 4000 images: as many as the "
          "accessories source); the same-domain AnB is fig3's (accessories → garments), paired by seed (the same "
          "baseB and initial weights, shared through the run store).",
          f"{MK_PAPER}: depthwise filters transfer between dissimilar domains with almost no loss.",
          (Check(_t("cross_domain", "AnB", "depthwise", label="AnB (animals)"), _base("cross_domain"), "no_loss"),
           Check(_t("cross_domain", "AnB", "depthwise", label="AnB (animals)"),
                _t("fig3_general_filters", "AnB", "depthwise", label="AnB (accessories)"), "no_loss"),
           Check(_t("cross_domain", "AnB", "depthwise", label="AnB (animals)"), _t("cross_domain", "random_frozen"),
                "higher", True),
           Check(_t("cross_domain", "AnB", "depthwise", label="AnB (animals)"), _t("cross_domain", "shuffled"),
                "higher", True),
           Check(_t("cross_domain", "AnB", "depthwise", label="AnB (animals)"), _t("cross_domain", "delta"),
                "higher", True))),
    Claim("yosinski", "Fig. 3, regular CNN: Yosinski's curve", ("fig3_yosinski_alexnet",),
          "In an AlexNet-style CNN, do frozen transferred filters lose accuracy with depth (AnB below BnB at "
          "deep n), and does fine-tuning them (AnB+) recover it?",
          "AlexNet-style CNN at quarter width (5 conv layers), n = 1, 3, 5; AnB, BnB, AnB+, BnB+.",
          YOSINSKI,
          (Check(_t("fig3_yosinski_alexnet", "AnB", "conv"), _t("fig3_yosinski_alexnet", "BnB", "conv"), "lower"),
           Check(_t("fig3_yosinski_alexnet", "AnB", "conv"), _base("fig3_yosinski_alexnet"), "lower"),
           Check(_t("fig3_yosinski_alexnet", "AnB+", "conv"), _base("fig3_yosinski_alexnet"), "no_loss"))),
    Claim("fig4", "Fig. 4: reversed freezing", ("fig4_reversed",),
          "Freeze A's layers n..L and train the earlier ones on B: do a regular CNN's deep conv filters carry A's "
          "task, so that freezing them costs accuracy?",
          "ResNet-18 at quarter width (17 conv layers), n = 1 (all frozen), 9, 17 (only the last frozen).",
          f"{MK_PAPER}: reversed freezing of ResNet conv layers loses accuracy (the deep filters are specific).",
          (Check(_t("fig4_reversed", "reversed", "conv", n=9), _base("fig4_reversed"), "lower"),
           Check(_t("fig4_reversed", "reversed", "conv", n="last"), _base("fig4_reversed"), None),
           Check(_t("fig4_reversed", "reversed", "conv", n=1), _base("fig4_reversed"), None))),
    Claim("fig5", "Fig. 5: retention at the deepest n across depths of regular CNNs", ("fig5_retention",),
          "With every filter layer transferred and frozen (n = L), how much of baseB's accuracy do ResNet-18/34/50 "
          "keep, against the DS-CNN's depthwise layers?",
          "ResNet-18/34/50 at quarter width and ConvNeXt-micro (depthwise), n = L.",
          f"{MK_PAPER}: the depthwise stacks keep nearly all accuracy at n = L; the ResNets lose more.",
          tuple(Check(_t("fig5_retention", "AnB", kind, model=m, label=f"AnB {m}"), _base("fig5_retention"),
                     "no_loss" if kind == "depthwise" else "lower")
                for m, kind in (("resnet18_w16_cifar", "conv"), ("resnet34_w16_cifar", "conv"),
                                ("resnet50_w16_cifar", "conv"), ("convnext_micro_cifar", "depthwise")))),
    Claim("larger_source", "A larger source gives better filters", ("larger_source",),
          "Do depthwise filters learned from more source images transfer better?",
          "ConvNeXt-micro, baseA on 100 / 600 / 6000 accessory images per class, AnB at n = 5; 600 steps per run.",
          f"{MK_PAPER}: filters from the larger source (ImageNet-22k / more images) transfer better.",
          (Check(_t("larger_source", "AnB", "depthwise", source_size=6000, label="AnB (A: 6000/class)"),
                _t("larger_source", "AnB", "depthwise", source_size=100, label="AnB (A: 100/class)"), "higher"),
           Check(_t("larger_source", "AnB", "depthwise", source_size=600, label="AnB (A: 600/class)"),
                _t("larger_source", "AnB", "depthwise", source_size=100, label="AnB (A: 100/class)"), None),
           Check(_t("larger_source", "AnB", "depthwise", source_size=6000, label="AnB (A: 6000/class)"),
                _t("larger_source", "random_frozen"), "higher", True))),
    Claim("cross_architecture", "Cross-architecture: ConvNeXt filters in MobileNetV2",
          ("cross_architecture_resize", "cross_architecture_center_crop"),
          "Do ConvNeXt-micro's 7x7 depthwise filters, mapped to 3x3, serve MobileNetV2 as well as its own "
          "transferred filters, and better than random ones? Which kernel map: resize or centre crop?",
          "MobileNetV2 alpha 0.35 (17 depthwise layers), first n = 5 from ConvNeXt-micro's baseA (`cross`, "
          "kernel resized or centre-cropped, channels mapped) against AnB from MobileNetV2's own baseA.",
          f"{MK_PAPER}: depthwise filters transfer across architectures.",
          (Check(_t("cross_architecture_resize", "cross", label="cross (resize)"),
                _t("cross_architecture_resize", "AnB"), "no_loss"),
           Check(_t("cross_architecture_resize", "cross", label="cross (resize)"),
                _t("cross_architecture_resize", "random_frozen"), "higher", True),
           Check(_t("cross_architecture_center_crop", "cross", label="cross (centre crop)"),
                _t("cross_architecture_center_crop", "random_frozen"), "higher", True),
           Check(_t("cross_architecture_center_crop", "cross", label="cross (centre crop)"),
                _t("cross_architecture_resize", "cross", label="cross (resize)"), None))),
)


def presets():
    """Every preset of `CLAIMS`, once, in the order `make reproduce` trains them (shared bases come first)."""
    out = []
    for claim in CLAIMS:
        out += [p for p in claim.presets if p not in out]
    return out


def load_rows(runs_dir):
    """({preset: finished result rows}, {preset: number of planned runs}) of the presets with a sweep directory
    under `runs_dir`."""
    rows, planned = {}, {}
    for preset in presets():
        path = os.path.join(runs_dir, preset)
        if os.path.isfile(os.path.join(path, "sweep.json")):
            definition = results.load_definition(path)
            planned[preset] = len(definition["runs"])
            rows[preset] = [r for r in results.collect(path, definition)
                            if r["status"] == "finished" and r.get("top1") is not None]
    return rows, planned


def progress(rows, planned):
    """One sentence: finished / planned runs per preset (presets never started count as not started)."""
    parts = [f"{p} {len(rows.get(p, []))}/{planned[p]}" if p in planned else f"{p} not started" for p in presets()]
    done = all(p in planned and len(rows[p]) == planned[p] for p in presets())
    return ("All planned runs finished" if done else "**Incomplete: not every planned run has finished**") + \
        " (finished/planned runs: " + ", ".join(parts) + ")."


def _select(rows, side):
    picked = [r for r in rows.get(side.preset, []) if r["treatment"] == side.treatment
              and (side.kind is None or r["kind"] == side.kind) and (side.model is None or r["model"] == side.model)
              and (side.source_size is None or r["source_size"] == side.source_size)]
    if side.n == "last":
        last = {}
        for r in picked:
            last[(r["model"], r["kind"])] = max(last.get((r["model"], r["kind"]), 0), r["n"] or 0)
        picked = [r for r in picked if (r["n"] or 0) == last[(r["model"], r["kind"])]]
    elif side.n is not None:
        picked = [r for r in picked if r["n"] == side.n]
    return picked


def _uses_n(side):
    return not TREATMENTS[side.treatment].is_base


def paired(rows, test):
    """Per (model, kind, n, source size) of X: the seeds where X and its partner Y both finished, and X − Y in
    top-1 percentage points per seed, with `stats.mean_ci`. Y is the run of the same model and seed; also of
    the same kind and n when both sides use n and neither fixes its own n; also of the same source size when
    both sides come from one preset and have one."""
    xs, ys = _select(rows, test.x), _select(rows, test.y)
    match_n = _uses_n(test.x) and _uses_n(test.y) and test.x.n is None and test.y.n is None
    match_kind = _uses_n(test.x) and _uses_n(test.y) and test.x.kind == test.y.kind
    same_preset = test.x.preset == test.y.preset
    groups = {}
    for x in xs:
        for y in ys:
            if (y["model"], y["seed"]) != (x["model"], x["seed"]):
                continue
            if (match_kind and y["kind"] != x["kind"]) or (match_n and y["n"] != x["n"]):
                continue
            if same_preset and None not in (x["source_size"], y["source_size"]) \
                    and test.x.source_size is None and test.y.source_size is None \
                    and x["source_size"] != y["source_size"]:
                continue
            groups.setdefault((x["model"], x["kind"], x["n"], x["source_size"]), {})[x["seed"]] = \
                100 * (x["top1"] - y["top1"])
    out = []
    for (model, kind, n, size), per_seed in groups.items():
        diffs = [per_seed[s] for s in sorted(per_seed)]
        mean, half = stats.mean_ci(diffs)
        out.append({"model": model, "kind": kind, "n": n, "source_size": size, "seeds": sorted(per_seed),
                    "diffs_pp": diffs, "mean_pp": mean, "ci_pp": half, "outcome": outcome(mean, half)})
    return out


def outcome(mean, half):
    """"higher" / "lower" (the CI excludes 0), "no_loss" (the CI lies above -MARGIN_PP), "unclear"; None with one
    seed."""
    if half is None:
        return None
    if mean - half > 0:
        return "higher"
    if mean + half < 0:
        return "lower"
    if mean - half > -MARGIN_PP:
        return "no_loss"
    return "unclear"


def _meets(got, predicted):
    """True (as predicted), False (opposite), None (neither)."""
    if got is None:
        return None
    if predicted == "higher":
        return True if got == "higher" else False if got == "lower" else None
    if predicted == "lower":
        return True if got == "lower" else False if got == "higher" else None
    if predicted == "no_loss":
        return True if got in ("no_loss", "higher") else False if got == "lower" else None
    return None


def verdict(claim, entries):
    """(word, sentence) for `claim` from its tests' paired entries (`entries[i]` belongs to `claim.tests[i]`)."""
    checks = [(t, e) for t, group in zip(claim.tests, entries) if t.predicted for e in group]
    missing = [t for t, group in zip(claim.tests, entries) if t.predicted and not group]
    if not checks or missing or any(e["outcome"] is None for _, e in checks):
        return "incomplete", "Not every predicted test has finished runs at two or more seeds yet."
    met = [_meets(e["outcome"], t.predicted) for t, e in checks]
    controls = [e["outcome"] == "higher" for t, e in checks if t.control]
    word = "contradicted" if False in met else "supported" if all(met) else "not shown"
    parts = [f"{sum(m is True for m in met)} of {len(met)} predicted outcomes came out as predicted, "
             f"{sum(m is False for m in met)} opposite, {sum(m is None for m in met)} unclear"]
    if controls and not all(controls):
        parts.append(f"{controls.count(False)} of {len(controls)} control comparisons do not show the filters under "
                     "test above random, shuffled or identity filters, so there the setup cannot credit the result "
                     "to the filters")
    elif controls:
        parts.append("every control comparison shows the filters under test above the control filters")
    return word, "; ".join(parts) + "."


_AS = {"higher": "above", "lower": "below", "no_loss": f"within {MARGIN_PP:g} pp of or above"}
SCALE_CAVEAT = ("Nothing here speaks for ImageNet scale: 28x28 grey images, models of 0.4-1.5 M parameters, "
                "200-600 steps, 5 seeds.")


def plain_words(claim, entries):
    """The verdict's plain-language paragraph: what each finished comparison shows, whether any comparison with
    control filters shows the setup can detect a filter effect, and what stays open."""
    shown, open_, undecided, sensitive = [], [], [], []
    controls_done = False
    for t, group in zip(claim.tests, entries):
        for e in group:
            if e["outcome"] is None:
                continue
            unclear = e["outcome"] == "unclear"
            text = f"{t.x.name()} {'from' if unclear else _AS[e['outcome']]} {t.y.name()} ({_where(e)}: " \
                   f"{_fmt_entry(e)} pp"
            text += f"; predicted {t.predicted.replace('_', ' ')})" if t.predicted else ")"
            (open_ if unclear else shown).append(text)
            if e["outcome"] == "no_loss" and t.predicted in ("higher", "lower"):
                # the interval holds 0: neither the predicted direction nor its opposite
                undecided.append(f"{t.x.name()} {_AS[t.predicted]} {t.y.name()} ({_where(e)})")
            if t.control:
                controls_done = True
                if e["outcome"] == "higher":
                    sensitive.append(f"{t.x.name()} above {t.y.name()} in {_where(e)}")
    if not shown and not open_:
        return ""
    out = []
    if shown:
        out.append("The data show " + "; ".join(shown) + ".")
    if sensitive:
        out.append("The setup can detect an effect of what the filters hold where the filters under test beat control "
                   "filters: "
                   + "; ".join(sensitive) + ".")
    elif controls_done:
        out.append("No comparison with control filters comes out higher, so these runs do not show that the "
                   "filters themselves carry what is measured.")
    elif any(t.control for t in claim.tests):
        out.append("No comparison with control filters has finished yet, so these runs cannot say whether the "
                   "setup detects what the filters hold.")
    if open_:
        out.append("They do not tell " + "; ".join(open_) + f": the 95 % interval holds 0 and reaches below "
                   f"-{MARGIN_PP:g} pp.")
    if undecided:
        out.append("They do not show " + "; ".join(undecided) + ", as predicted: there the 95 % interval holds 0.")
    return " ".join([*out, SCALE_CAVEAT])


def _fmt_entry(e):
    ci = "" if e["ci_pp"] is None else f" ± {e['ci_pp']:.2f}"
    return f"{e['mean_pp']:+.2f}{ci}"


def _where(e):
    parts = [e["model"]]
    if e["kind"]:
        parts.append(e["kind"])
    if e["n"] is not None:
        parts.append(f"n={e['n']}")
    if e["source_size"] is not None:
        parts.append(f"A {e['source_size']}/class")
    return ", ".join(parts)


def _summary_lines(rows, claim):
    lines = ["| preset | model | kind | treatment | n | A/class | seeds | top-1 (mean ± 95 % CI) |",
             "|---|---|---|---|---|---|---|---|"]
    for preset in claim.presets[:1] if claim.key == "cross_domain" else claim.presets:
        for s in results.summarize(rows.get(preset, [])):
            if s["treatment"] == "baseA":
                continue
            ci = "" if s["top1_ci"] is None else f" ± {s['top1_ci']:.4f}"
            lines.append(f"| {preset} | {s['model']} | {s['kind'] or ''} | {s['treatment']} | {s['n'] or ''} | "
                         f"{s['source_size'] or ''} | {s['seeds']} | {s['top1']:.4f}{ci} |")
    return lines


def _copy_figures(runs_dir, claim, img_dir, out_dir):
    links = []
    for preset in claim.presets[:1] if claim.key == "cross_domain" else claim.presets:
        for name in FIGURES:
            src = os.path.join(runs_dir, preset, "figures", name)
            if os.path.isfile(src):
                os.makedirs(img_dir, exist_ok=True)
                dst = os.path.join(img_dir, f"{preset}_{name}")
                shutil.copyfile(src, dst)
                links.append(f"![{preset}: {name[:-4].replace('_', ' ')}]({os.path.relpath(dst, out_dir)})")
    return links


def render(rows, runs_dir, out_path, img_dir=None, provenance=""):
    """The findings document (markdown) for `rows` (`load_rows`); figures copied into `img_dir`."""
    out_dir = os.path.dirname(os.path.abspath(out_path))
    img_dir = img_dir or os.path.join(out_dir, "img", "findings")
    lines = ["# Findings: the paper's claims at CPU scale", "",
             "Written by `make reproduce` (`python -m mk_keras.experiments.findings`) from the sweeps of "
             "`flags/claims/*.flags`; do not edit by hand. " + provenance, "",
             "Every number is top-1 on a fixed test subset (500 images per class); a difference X − Y is taken "
             "per seed between runs that start from the same initial weights and see the same data (paired), "
             "and reported as mean ± half-width of its Student-t 95 % confidence interval over the seeds, in "
             "percentage points (pp).", "", "**Rules.** " + RULES, "",
             "| claim | verdict | why |", "|---|---|---|"]
    sections = []
    for claim in CLAIMS:
        entries = [paired(rows, t) for t in claim.tests]
        word, why = verdict(claim, entries)
        lines.append(f"| [{claim.title}](#{claim.key}) | **{word}** | {why} |")
        sec = [f"## {claim.title} <a id=\"{claim.key}\"></a>", "", f"**Question.** {claim.question}", "",
               f"**Setup.** {claim.setup} Presets: " + ", ".join(f"`flags/claims/{p}.flags`" for p in claim.presets)
               + "; shared settings in `flags/claims/common.flags`.", "",
               f"**Published reference.** {claim.reference}", "", "**Paired differences (pp).**", "",
               "| X − Y | where | seeds | mean ± 95 % CI | predicted | outcome |", "|---|---|---|---|---|---|"]
        for t, group in zip(claim.tests, entries):
            label = f"{t.x.name()} − {t.y.name()}" + (" (control)" if t.control else "")
            if not group:
                sec.append(f"| {label} | (no finished pairs yet) | 0 | | {t.predicted or 'reported'} | |")
            for e in group:
                sec.append(f"| {label} | {_where(e)} | {len(e['seeds'])} | {_fmt_entry(e)} | "
                           f"{(t.predicted or 'reported').replace('_', ' ')} | "
                           f"{(e['outcome'] or '').replace('_', ' ')} |")
        sec += ["", "**Top-1 per treatment.**", "", *_summary_lines(rows, claim), ""]
        sec += _copy_figures(runs_dir, claim, img_dir, out_dir) + [""]
        sec += [f"**Verdict: {word}.** {why}", ""]
        words = plain_words(claim, entries)
        if words:
            sec += [words, ""]
        sections += sec
    return "\n".join(lines + ["", CHOICES] + sections)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mk_keras.experiments.findings", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/claims", help="directory holding one sweep directory per preset")
    parser.add_argument("--out", default="docs/findings.md")
    parser.add_argument("--provenance", default="", help="a sentence on how and where the sweeps were run")
    parser.add_argument("--list_presets", action="store_true", help="print the presets, one per line, and exit")
    args = parser.parse_args(argv)
    if args.list_presets:
        print("\n".join(presets()))
        return 0
    if not os.path.isdir(args.runs):
        parser.error(f"--runs={args.runs!r} is not a directory; run make reproduce first")
    rows, planned = load_rows(args.runs)
    text = render(rows, args.runs, args.out, provenance=f"{progress(rows, planned)} {args.provenance}".strip())
    results.atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
