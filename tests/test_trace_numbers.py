"""Every interval and percentage README.md and docs/ cite is found in a committed results/ file."""
import os
import subprocess

from pipeline.trace_numbers import untraced

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_interval_and_percentage_the_docs_cite_traces_to_a_committed_results_file():
    count, missing = untraced(ROOT)
    assert count > 100  # the check reads the documents at all
    assert missing == [], "\n".join(missing)


def _project(tmp_path, docs: str, results: dict[str, str], commit: bool = True) -> str:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("Nothing cited here.\n")
    (tmp_path / "docs" / "study.md").write_text(docs)
    for name, text in results.items():
        path = tmp_path / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    if commit:
        subprocess.run(["git", "add", "results"], cwd=tmp_path, check=True)
    return str(tmp_path)


def test_an_interval_traces_as_written_or_negated_and_a_percentage_as_a_fraction(tmp_path):
    docs = ("GFRIEND − SFT +4.7 [+3.4, +6.1]; BT − GFRIEND +12.4 [+10.6,\n+14.3]; 48.8% right;\n"
            "a list [1, 2] is no interval.\n")
    root = _project(tmp_path, docs, {"table.md": "| GFRIEND − SFT | +4.7 [+3.4, +6.1] |\n"
                                                 "| GFRIEND − BT | -12.4 [-14.3, -10.6] |\n",
                                     "stats.json": '{"sample_accuracy": 0.488}'})
    assert untraced(root) == (3, [])


def test_a_number_in_no_results_file_or_in_an_uncommitted_one_is_reported_at_its_line(tmp_path):
    docs = "first line\nGRPO − SFT +8.5 [+7.0,\n+10.1] and 64.8% right\n"
    root = _project(tmp_path, docs, {"table.md": "| GRPO − SFT | +8.5 [+7.0, +10.1] | 64.8 |\n"}, commit=False)
    count, missing = untraced(root)
    assert count == 2
    assert missing == ["docs/study.md:2: interval [+7.0, +10.1] is in no committed results/ file",
                       "docs/study.md:3: percentage 64.8% is in no committed results/ file"]
