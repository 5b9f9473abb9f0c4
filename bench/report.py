"""README's Benchmarks section, generated from ``results/bench/*.json`` (``make bench``).

Prints the section; ``--readme README.md`` replaces the section in place (from its
``## Benchmarks`` heading to the next ``## `` heading). Every row names the JSON file it
comes from; each file records the command, the machine, its load and the matmul peaks of
its own run.

    .venv/bin/python bench/report.py [--readme README.md]
"""
import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADING = "## Benchmarks (`make bench`)"

INTRO = """\
`make bench` runs every script in `bench/` (needs the `bench` extra: the reference `mnist1d`,
torch 2.13 CPU and baal) and then `bench/report.py`, which writes this section from the JSON
files in `results/bench/`. Each script measures its reference in the same process and the
float32 / float64 matmul peak (TensorFlow, 2048 x 2048) in the same run; times are the
minimum over the repeats (median in brackets; the files hold every run). *Speed-up* is
reference time / ours; *bound* is the FLOP count of the work at that matmul peak, and
*ours / bound* how far ours is from it (1.0 = at the peak). The machine is shared with a
queue of experiment runs: each file records the load average at the start and end of its run.
Files of different dates may come from different machines of the same kind (the CPU flags
and peaks below differ): compare ratios within a file, not absolute times across files.
"""


def _seconds(value, median=None):
    if value is None:
        return ""
    text = f"{value:.3g} s" if value < 100 else f"{value:.0f} s"
    if median is not None:
        text += f" ({median:.3g})" if median < 100 else f" ({median:.0f})"
    return text


def load_results(directory):
    results = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path, encoding="utf-8") as f:
            results.append((os.path.relpath(path, ROOT), json.load(f)))
    return results


def render(results) -> str:
    lines = [HEADING, "", INTRO,
             "| benchmark | ours | reference | speed-up | bound | ours / bound | file |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for path, data in results:
        peaks = data["peaks_flop_per_s"]
        for r in data.get("rows", []):
            reference = ""
            if r["reference_s"] is not None:
                reference = f"{r['reference']} {_seconds(r['reference_s'], r['reference_median_s'])}"
            speedup = f"{r['speedup']:.2f}x" if r["speedup"] is not None else ""
            bound = ratio = ""
            if r["bound_s"] is not None:
                bound = (f"{_seconds(r['bound_s'])} ({r['flop'] / 1e9:.3g} GFLOP at "
                         f"{peaks[r['precision']] / 1e9:.0f} GFLOP/s {r['precision']})")
                ratio = f"{r['bound_ratio']:.2f}x"
            name = r["benchmark"] + (f"; {r['note']}" if r.get("note") else "")
            lines.append(f"| {name} | {_seconds(r['ours_s'], r['ours_median_s'])} | {reference} "
                         f"| {speedup} | {bound} | {ratio} | `{path}` |")
    lines += ["", "Runs behind the table (command, date, machine, load average start -> end, "
              "matmul peaks):", ""]
    for path, data in results:
        m, peaks = data["machine"], data["peaks_flop_per_s"]
        lines.append(f"- `{path}`: `{data['command']}`, {m['date']}, {m['cpu']} "
                     f"({m['cores']} cores, {'/'.join(m['simd'])}), load "
                     f"{m['load_average_start'][0]:.1f} -> {m['load_average_end'][0]:.1f}, peaks "
                     f"{peaks['float32'] / 1e9:.0f} GFLOP/s float32, "
                     f"{peaks['float64'] / 1e9:.0f} GFLOP/s float64.")
    extra = [data.get("readme_notes") for _, data in results if data.get("readme_notes")]
    if extra:
        lines += ["Notes written by the scripts:", ""]
        lines += [f"- {note}" for notes in extra for note in notes]
    return "\n".join(lines) + "\n"


def replace_section(readme_text: str, section: str) -> str:
    """``readme_text`` with its Benchmarks section (heading to next ``## ``) replaced."""
    start = readme_text.index(HEADING)
    end = readme_text.find("\n## ", start + len(HEADING))
    end = len(readme_text) if end < 0 else end + 1
    return readme_text[:start] + section + "\n" + readme_text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(ROOT, "results", "bench"))
    parser.add_argument("--readme", default=None, help="replace the section in this file")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if not results:
        sys.exit(f"Expected bench results in {args.results}. Received none; run `make bench`.")
    section = render(results)
    if args.readme:
        with open(args.readme, encoding="utf-8") as f:
            text = f.read()
        with open(args.readme, "w", encoding="utf-8") as f:
            f.write(replace_section(text, section))
        print(f"updated the Benchmarks section of {args.readme}")
    else:
        print(section)


if __name__ == "__main__":
    main()
