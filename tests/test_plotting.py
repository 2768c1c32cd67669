"""Style, reproducible figure/table files, and the study's plots on small synthetic tables."""
import json

import matplotlib

matplotlib.use("agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from anira import plotting as P  # noqa: E402
from anira.analysis import (BootstrapConfig, by_size, depth_by_difficulty, depth_by_kind, example_depths,  # noqa: E402
                            feature_importance, pareto, speedup_table, test_time_depth,
                            timing_decomposition)
from synthetic import DYNAMIC, STATIC, synthetic_records  # noqa: E402 (tests/synthetic.py)

B = BootstrapConfig(n_boot=50)
PROV = P.make_provenance("smoke", ["run-b", "run-a", "run-a"], notebook="03_alignment")


@pytest.fixture(scope="module")
def recs():
    return synthetic_records(tasks=("toposort", "hops"), seeds=(0,), n_examples=12, n_tokens=6,
                             depth_mode={"fixed": "constant", "early": "static", "online": "difficulty",
                                         "random": "random"}, eval_depths=(10,))


def _figure(y):
    P.setup_style()
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2], y, **{k: v for k, v in P.mech_style("online").items() if k != "label"})
    P.label_axes(ax, "difficulty", "depth")
    return fig


def test_mechanism_styles_are_fixed_distinct_and_colourblind_palette():
    styles = [P.mech_style(m) for m in P.MECHANISMS]
    assert len({s["color"] for s in styles}) == 5 and len({s["marker"] for s in styles}) == 5
    palette = {mcolors.to_hex(c) for c in __import__("seaborn").color_palette("colorblind", 10)}
    assert {s["color"] for s in styles} <= palette
    assert P.MECH_STYLE["early"]["color"] == "#0173b2" and P.MECH_STYLE["online"]["color"] == "#de8f05"
    with pytest.raises(ValueError, match="allowed values"):
        P.mech_style("adaptive")


def test_axis_labels_carry_units():
    assert P.axis_label("depth") == "mean depth (iterations / token)"
    assert P.axis_label("speed", "x") == "speed (x)"


def test_savefig_is_byte_reproducible(tmp_path):
    a = P.savefig(_figure([1, 2, 3]), tmp_path / "a" / "fig", PROV)
    first = {k: a[k].read_bytes() for k in ("pdf", "png", "json")}
    b = P.savefig(_figure([1, 2, 3]), tmp_path / "a" / "fig", PROV)  # a fresh figure, same data
    assert {k: b[k].read_bytes() for k in ("pdf", "png", "json")} == first
    c = P.savefig(_figure([1, 2, 4]), tmp_path / "c", PROV)  # different data -> different bytes
    assert c["pdf"].read_bytes() != first["pdf"] and c["png"].read_bytes() != first["png"]
    assert b"CreationDate" not in first["pdf"] and b"Matplotlib" not in first["pdf"]
    assert b"Software" not in first["png"]
    side = json.loads(first["json"])
    assert side["provenance"] == {"profile": "smoke", "run_ids": ["run-a", "run-b"], "notebook": "03_alignment"}
    assert side["files"] == ["fig.pdf", "fig.png"]


def test_savefig_footer_and_provenance_required(tmp_path):
    fig = _figure([1, 2, 3])
    P.savefig(fig, tmp_path / "f", PROV, footer=True, close=False)
    assert any("profile: smoke | runs: 2" in t.get_text() for t in fig.texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="profile"):
        P.savefig(_figure([1, 2, 3]), tmp_path / "g", {"run_ids": []})


def test_save_table_fixed_rounding_in_all_formats(tmp_path):
    df = pd.DataFrame({"task": ["to_po", "hops"], "rho": [0.123456, -0.00001], "n": [3, 4],
                       "ok": [True, False], "ci": [np.nan, 1.0]})
    out = P.save_table(df, tmp_path / "t", PROV, float_format={"rho": "%.2f", "ci": "%.1f"})
    assert out["csv"].read_text() == "task,rho,n,ok,ci\nto_po,0.12,3,yes,\nhops,0.00,4,no,1.0\n"
    md = out["md"].read_text()
    assert "0.12" in md and "0.123" not in md and "--" in md
    tex = out["tex"].read_text()
    assert r"to\_po & 0.12 & 3 & yes & -- \\" in tex and tex.startswith(r"\begin{tabular}{lrrlr}")
    again = P.save_table(df, tmp_path / "t", PROV, float_format={"rho": "%.2f", "ci": "%.1f"})
    assert all(again[k].read_bytes() == out[k].read_bytes() for k in out)
    assert json.loads(out["json"].read_text())["files"] == ["t.csv", "t.md", "t.tex"]


def test_save_table_nullable_columns_missing_like_nan(tmp_path):
    """A nullable boolean (e.g. learning_table's ``learned``, NA = not judged) prints its NA as a
    missing cell, like NaN, never as '<NA>'."""
    df = pd.DataFrame({"learned": pd.array([True, False, pd.NA], dtype="boolean"), "n": [1, 2, 3]})
    out = P.save_table(df, tmp_path / "t", PROV)
    assert out["csv"].read_text() == "learned,n\nyes,1\nno,2\n,3\n"
    assert "<NA>" not in out["md"].read_text() and r"-- & 3 \\" in out["tex"].read_text()


def test_plot_alignment_one_panel_per_task_fixed_colours(recs):
    fig = P.plot_alignment(depth_by_difficulty(recs, boot=B))
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["hops", "toposort"]
    lines = {l.get_label(): l for l in axes[0].get_lines() if not l.get_label().startswith("_")}
    assert mcolors.to_hex(lines["online (ANIRA-O)"].get_color()) == P.MECH_STYLE["online"]["color"]
    assert len(lines) == 4 and "mean depth" in axes[0].get_ylabel()
    # lines that coincide (every mechanism at max depth) are shifted apart, so none hides another
    xs = [tuple(np.round(l.get_xdata(), 3)) for l in lines.values()]
    assert len(set(xs)) == len(xs)
    plt.close(fig)


def test_every_plot_draws_from_analysis_tables(recs, tmp_path):
    figs = {
        "gen": P.plot_generalization(by_size(recs, boot=B)),
        "ttd": P.plot_test_time_depth(test_time_depth(recs, boot=B)),
        "timing": P.plot_timing(timing_decomposition(recs, STATIC, DYNAMIC, boot=B)),
        "fi": P.plot_feature_importance(feature_importance(recs, STATIC, DYNAMIC, n_repeats=2)),
    }
    assert len(figs["gen"].axes) == 4  # accuracy + depth row, 2 tasks
    shaded = [p for p in figs["gen"].axes[0].patches if p.get_label() == "training range"]
    assert len(shaded) == 1
    lang = synthetic_records(tasks=("language",), seeds=(0,), n_examples=10, n_tokens=6,
                             depth_mode={"online": "difficulty"})
    figs["kind"] = P.plot_depth_by_kind(depth_by_kind(lang, boot=B))
    summ = [{"task": "hops", "mechanism": m, "seed": 0, "beta": b, "max_depth": 8, "accuracy": a, "mean_depth": d,
             "wall_time": w, "fixed_depth": fd} for m, b, a, d, w, fd in
            (("fixed", None, 0.9, 8, 8.0, 8), ("fixed", None, 0.6, 4, 4.0, 4), ("online", 0.01, 0.92, 3, 4.0, None))]
    figs["pareto"] = P.plot_pareto(pareto(summ))
    figs["speedup"] = P.plot_speedup(speedup_table(summ))
    for name, fig in figs.items():
        assert fig.axes, name
        plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        P.plot_alignment(pd.DataFrame())


def test_depth_heatmap_rows_per_mechanism_and_blank_unscored(recs):
    ed = example_depths(recs, "toposort", 2)
    depths = {"early": ed["early"].astype(float).tolist(), "online": ed["online"].astype(float).tolist()}
    depths["online"][0] = np.nan
    fig = P.plot_depth_heatmap([f"tok{t}" for t in ed["target"]], depths, difficulty=ed["difficulty"], max_depth=8)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["early (ANIRA-E)", "online (ANIRA-O)"]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == f"tok{ed['target'].iloc[0]}"
    assert ax.images[0].get_array().mask[1, 0] and not ax.images[0].get_array().mask[0, 0]
    plt.close(fig)
    with pytest.raises(ValueError, match="tokens"):
        P.plot_depth_heatmap(["a", "b"], {"early": [1, 2, 3]})


def test_task_example_boxes_never_overlap():
    """01_task_examples: every token box is as wide as its word, rows wrap before the row width,
    and two boxes of a row are at least a gap apart (the language row's long words overlapped when
    every token had the same cell). Checked on the rendered boxes too."""
    import matplotlib.pyplot as plt

    from anira import overview
    from anira.tasks import make_task

    words = ["<bos>", "accompanied", "a", "harbour", "meanwhile", "=", "Sandra"] * 12
    layout = overview.token_layout(words, row_chars=60)
    for (r0, x0), (r1, x1), w0, w1 in zip(layout, layout[1:], words, words[1:]):
        if r0 == r1:
            assert x1 - x0 >= (max(len(w0), 2) + max(len(w1), 2)) / 2 + 1.5
        assert x1 + max(len(w1), 2) / 2 <= 60 or r1 > r0
    task = make_task("language")
    fig, ax = plt.subplots(figsize=(13, 2.3))
    overview.plot_example_tokens(task, task.generate(1, 0)[0], ax, max_difficulty=4)
    fig.canvas.draw()
    boxes = [t.get_bbox_patch().get_window_extent() for t in ax.texts]
    same_row = [(a, b) for a, b in zip(boxes, boxes[1:]) if abs(a.y0 - b.y0) < 1]
    assert same_row and all(a.x1 <= b.x0 for a, b in same_row)
    plt.close(fig)


def test_pareto_writes_beta_beside_points_only_for_a_sweep():
    """One beta: no labels (they would pile up where points coincide); a sweep: one per point."""
    from anira.analysis import pareto

    def summ(betas):
        rows = [{"task": "hops", "mechanism": "fixed", "seed": 0, "beta": None, "max_depth": 6, "accuracy": 0.9,
                 "mean_depth": 6, "wall_time": 6.0, "fixed_depth": 6}]
        rows += [{"task": "hops", "mechanism": m, "seed": 0, "beta": b, "max_depth": 6, "accuracy": 0.9,
                  "mean_depth": 5.9, "wall_time": 6.0, "fixed_depth": None} for m in ("online", "random") for b in betas]
        return rows

    def beta_labels(fig):
        return [t.get_text() for t in fig.axes[0].texts if not t.get_text().startswith("depth")]

    for betas, n_labels in (([0.01], 0), ([0.01, 0.1], 4)):
        fig = P.plot_pareto(pareto(summ(betas)))
        assert len(beta_labels(fig)) == n_labels
        plt.close(fig)
    fig = P.plot_pareto(pareto(summ([0.01])), annotate_beta=True)
    assert beta_labels(fig) == ["0.01", "0.01"]
    # the fixed-depth baselines are labelled points, not a line through depths never run
    assert "depth 6" in [t.get_text() for t in fig.axes[0].texts]
    assert all(l.get_linestyle() == "None" for l in fig.axes[0].get_lines() if l.get_label() != "Pareto front")
    plt.close(fig)


def test_axis_label_does_not_nest_parentheses():
    assert P.axis_label("size", "longest chain (variables)") == "input size: longest chain (variables)"
    assert P.axis_label("depth") == "mean depth (iterations / token)"


def test_task_example_colours_are_discrete_with_a_legend_entry_each():
    """01_task_examples: an integer difficulty gets one colour (tokens of the same difficulty share
    it, distinct difficulties differ), every difficulty shown has a labelled swatch, the unscored
    style has its own entry, the legend says what difficulty means, and there is no continuous
    colourbar."""
    from anira import overview
    from anira.tasks import TASK_NAMES, make_task

    for name in TASK_NAMES:
        task = make_task(name)
        ex = task.generate(1, 0)[0]
        table = overview.token_table(task, ex)
        fig, ax = plt.subplots(figsize=(8, 2))
        overview.plot_example_tokens(task, ex, ax, max_difficulty=4)
        assert len(fig.axes) == 1, "no colourbar axes: the scale is the discrete legend"
        faces = [mcolors.to_hex(t.get_bbox_patch().get_facecolor()) for t in ax.texts]
        assert len(faces) == len(table)
        by_diff: dict = {}
        for face, d in zip(faces, table.difficulty):
            by_diff.setdefault("unscored" if np.isnan(d) else int(d), set()).add(face)
        assert all(len(f) == 1 for f in by_diff.values()), f"{name}: one colour per difficulty: {by_diff}"
        colours = [next(iter(f)) for f in by_diff.values()]
        assert len(set(colours)) == len(colours), f"{name}: distinct difficulties share a colour: {by_diff}"
        assert by_diff.get("unscored", {"#ffffff"}) == {"#ffffff"}
        leg = ax.get_legend()
        present = sorted(d for d in by_diff if d != "unscored")
        assert [t.get_text() for t in leg.get_texts()] == [str(d) for d in present] + [overview.UNSCORED_LABEL]
        swatches = [mcolors.to_hex(h.get_facecolor()) for h in leg.legend_handles]
        assert swatches[:-1] == [next(iter(by_diff[d])) for d in present]
        assert task.difficulty_name and task.difficulty_name in leg.get_title().get_text()
        plt.close(fig)
    assert overview.difficulty_colors(4) == overview.difficulty_colors(4)  # fixed: same number, same colour
    assert len(set(overview.difficulty_colors(11).values())) == 12


def test_task_example_rows_wrap_at_separators_and_fill_the_figure():
    """01_task_examples: rows break between assignments / edges / sentences, never inside one; the
    figure is sized to its rows (no large empty regions); no text overlaps: token boxes, legends and
    titles."""
    from anira import overview
    from anira.tasks import TASK_NAMES, make_task

    bad_start = {"hops": lambda t, i: t[i] in {"=", ";", "|"} or t[i].isdigit() or t[i - 1] in {"=", "?"},
                 "toposort": lambda t, i: t[i] in {">", ":", "="} or t[i - 1] == ">",
                 "addition": lambda t, i: t[i - 1].isdigit() and t[i].isdigit(),
                 "language": lambda t, i: t[i - 1] not in {".", "<bos>"} and t[i - 2] != "?"}
    examples = [(make_task(n), make_task(n).generate(1, s)[0]) for n in TASK_NAMES for s in (0, 1)]
    for task, ex in examples:
        words = task.render(ex)
        layout = overview.token_layout(words, 116, overview.KEEP_TOGETHER[task.name])
        starts = [i for i in range(1, len(words)) if layout[i][0] > layout[i - 1][0]]
        assert not [words[i - 2:i + 2] for i in starts if bad_start[task.name](words, i)], task.name
    P.setup_style()
    fig = overview.plot_task_examples(examples[::2], max_difficulty=4)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    n_rows = sum(1 + max(round(-t.get_position()[1]) for t in ax.texts) for ax in fig.axes)
    assert fig.get_figheight() <= 0.7 * len(fig.axes) + 0.25 * n_rows  # was 2.3 inches a panel
    assert fig.get_figwidth() <= 8.0
    boxes, texts = [], []
    for ax in fig.axes:
        tok = [t.get_bbox_patch().get_window_extent() for t in ax.texts]
        boxes += tok
        texts += [ax.title.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)]
        axw = ax.get_window_extent()
        if len({round(b.y0) for b in tok}) > 1:  # wrapped panel: its rows reach across the axes
            assert max(b.x1 for b in tok) - axw.x0 >= 0.8 * axw.width
        heights = sorted({round(b.y0) for b in tok})
        h = max(b.height for b in tok)
        assert all(b - a <= 2 * h for a, b in zip(heights, heights[1:])), "rows far apart"
    every = boxes + texts
    for i, a in enumerate(every):
        for b in every[i + 1:]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)
