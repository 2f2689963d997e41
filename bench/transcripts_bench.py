"""Transcript agreement and medoid consensus on 100,000 tasks x 3 simulated transcripts, and consensus quality.

uv run python bench/transcripts_bench.py [--tasks 100000] [--annotators 3] [--rover-tasks 100000] [--seed 0]

Half the tasks are English (scored by words), half Chinese (by characters). The truths are synthetic: sentences
of 6-20 words drawn Zipf-like from a built-in list of common English words, or of 4-12 common Chinese words with
commas and a full stop; no offline speech-text corpus ships in the project's packages. Each task gets 3 distinct
annotators of a pool of 30 whose accuracies are spread over 0.80-0.97, and each annotator's transcript is
`simulated_transcript(truth, accuracy)` (unit error rate about 1 - accuracy). Judged per language, as a project has
one: time and peak RSS of `judge_transcripts` (normalisation, all pairwise distances, agreement and medoid), each
language in a fresh process that loads only its table, so the peak is the judging's. Then
the error rate against the truth (corpus level: total edits / total truth units, WER for English, CER for Chinese)
of the medoid, of a random annotator's transcript, of the best transcript of each task (an oracle), and of
ROVER voting (on the first --rover-tasks tasks of each language, with the others on the same subset).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from labelflow.tasks.transcripts import (
    error_unit,
    judge_transcripts,
    normalise_transcript,
    rover_transcript,
    simulated_transcript,
)

ENGLISH_WORDS = (
    "the of and to a in is it you that he was for on are with as I his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she which do their time "
    "if will way about many then them write would like so these her long make thing see him two has look more day "
    "could go come did number sound no most people my over know water than call first who may down side been now "
    "find any new work part take get place made live where after back little only round man year came show every "
    "good me give our under name very through just form sentence great think say help low line differ turn cause "
    "much mean before move right boy old too same tell does set three want air well also play small end put home "
    "read hand port large spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth father head stand "
    "own page should country found answer school grow study still learn plant cover food sun four between state "
    "keep eye never last let thought city tree cross farm hard start might story saw far sea draw left late run"
)
CHINESE_WORDS = (
    "我们 今天 天气 很好 一起 公园 散步 机器 学习 需要 大量 标注 数据 模型 训练 语音 识别 文本 系统 问题 时间 "
    "工作 朋友 学校 老师 学生 城市 生活 中国 北京 上海 电话 音乐 电影 喜欢 觉得 知道 已经 可以 应该 因为 所以 "
    "但是 如果 然后 现在 以后 时候 地方 东西 事情 开始 结束 发现 认为 希望 准备 参加 会议 报告 结果 方法 研究 "
    "技术 发展 经济 社会 文化 历史 国家 世界 人民 政府 公司 市场 产品 服务 用户 价格 质量 安全 环境 健康 医院 "
    "医生 病人 孩子 家庭 父母 晚上 早上 中午 明天 昨天 周末 假期 旅行 火车 飞机 汽车 马路 银行 超市 饭店 咖啡 "
    "米饭 面条 水果 我 你 他 她 的 了 是 在 有 和 也 都 很 不 没 去 来 说 看 听 想 做 吃 喝 买 卖 写 读"
)
ENGLISH = ENGLISH_WORDS.split()
CHINESE = CHINESE_WORDS.split()


def zipf_sampler(words: list[str], rng: np.random.Generator, size: int) -> np.ndarray:
    """Indices into `words` drawn with probability proportional to 1 / rank, as word frequencies roughly fall."""
    weights = 1.0 / np.arange(1, len(words) + 1)
    return rng.choice(len(words), size=size, p=weights / weights.sum())


def truths(language: str, count: int, rng: np.random.Generator) -> list[str]:
    """Synthetic sentences: English 6-20 words, Chinese 4-12 words with a comma and a full stop."""
    out = []
    if language == "en":
        lengths = rng.integers(6, 21, count)
        picks = zipf_sampler(ENGLISH, rng, int(lengths.sum()))
        at = 0
        for n in lengths:
            words = [ENGLISH[i] for i in picks[at : at + n]]
            at += n
            out.append(" ".join(words).capitalize() + ".")
        return out
    lengths = rng.integers(4, 13, count)
    picks = zipf_sampler(CHINESE, rng, int(lengths.sum()))
    at = 0
    for n in lengths:
        words = [CHINESE[i] for i in picks[at : at + n]]
        at += n
        half = max(1, n // 2)
        out.append("".join(words[:half]) + "，" + "".join(words[half:]) + "。")
    return out


def simulate(language: str, tasks: int, per_task: int, seed: int) -> tuple[list[str], pd.DataFrame]:
    """(truths, a long table task_id, annotator, text) for one language."""
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    accuracy = np.linspace(0.80, 0.97, 30)
    sentences = truths(language, tasks, rng)
    unit = error_unit(language)
    task_ids, annotators, texts = [], [], []
    for task, truth in enumerate(sentences):
        for annotator in pyrng.sample(range(len(accuracy)), per_task):
            task_ids.append(f"{language}-{task}")
            annotators.append(annotator)
            texts.append(simulated_transcript(truth, float(accuracy[annotator]), unit, pyrng))
    return sentences, pd.DataFrame({"task_id": task_ids, "annotator": annotators, "text": texts})


def judge_in_child(frame: pd.DataFrame, language: str, folder: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """Judge a frame in a fresh Python process, so its peak RSS is the judging's alone (plus the loaded frame)."""
    source, target = folder / f"{language}-in.pkl", folder / f"{language}-out.pkl"
    frame.to_pickle(source)
    command = [sys.executable, __file__, "--judge-child", str(source), str(target), language]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return pd.read_pickle(target), json.loads(done.stdout.strip().splitlines()[-1])


def judge_child(source: str, target: str, language: str) -> None:
    """The child's side: load the table, judge it, save the result and print seconds and RSS figures as JSON."""
    frame = pd.read_pickle(source)
    normalise_transcript("warm")  # builds the punctuation table (~0.2 s, once per process) outside the timing
    loaded = status_mib("VmRSS")
    # Reset the kernel's peak mark so the peak read below is the judging's, not the unpickling's.
    Path("/proc/self/clear_refs").write_text("5")
    began = time.perf_counter()
    judged = judge_transcripts(frame, language)
    seconds = time.perf_counter() - began
    peak = status_mib("VmHWM")
    judged.to_pickle(target)
    print(json.dumps({"seconds": seconds, "loaded": loaded, "peak": peak}))


def status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS now, VmHWM peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def corpus_rate(references: list[str], hypotheses: list[str], language: str) -> float:
    """Total edits / total reference units, both normalised: WER (words) or CER (characters)."""
    unit = error_unit(language)
    edits = units = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref = normalise_transcript(reference, language)
        hyp = normalise_transcript(hypothesis, language)
        ref_seq, hyp_seq = (ref.split(), hyp.split()) if unit == "word" else (ref, hyp)
        edits += Levenshtein.distance(ref_seq, hyp_seq)
        units += len(ref_seq)
    return edits / units


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--annotators", type=int, default=3)
    parser.add_argument(
        "--rover-tasks", type=int, default=100_000, help="ROVER on this many tasks, split between languages"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge-child", nargs=3, metavar=("SOURCE", "TARGET", "LANGUAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.judge_child:
        judge_child(*args.judge_child)
        return
    per_language = {"en": args.tasks // 2, "zh": args.tasks - args.tasks // 2}
    data = {}
    began = time.perf_counter()
    for offset, (language, count) in enumerate(per_language.items()):
        data[language] = simulate(language, count, args.annotators, args.seed + offset)
    rows = sum(len(frame) for _, frame in data.values())
    print(
        f"simulated {args.tasks:,} tasks x {args.annotators} transcripts ({rows:,} rows) in {time.perf_counter() - began:.1f} s"
    )
    judged = {}
    total_seconds = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for language, (_, frame) in data.items():
            judged[language], figures = judge_in_child(frame, language, Path(folder))
            total_seconds += figures["seconds"]
            units = "words" if error_unit(language) == "word" else "characters"
            print(
                f"judge_transcripts {language} ({units}): {len(judged[language]):,} tasks, {len(frame):,} "
                f"transcripts: {figures['seconds']:.2f} s ({len(frame) / figures['seconds']:,.0f} transcripts/s); "
                f"fresh process: RSS {figures['loaded']:.0f} MiB with the table loaded, peak {figures['peak']:.0f} MiB "
                f"while judging (+{figures['peak'] - figures['loaded']:.0f} MiB); mean agreement {judged[language]['agreement'].mean():.3f}"
            )
    print(f"judge_transcripts total: {args.tasks:,} tasks in {total_seconds:.2f} s")
    rng = np.random.default_rng(args.seed + 99)
    for language, (sentences, frame) in data.items():
        metric = "WER" if error_unit(language) == "word" else "CER"
        consensus = judged[language]["text"].tolist()
        by_task = frame["text"].to_numpy(dtype=object).reshape(len(sentences), args.annotators)
        random_pick = by_task[np.arange(len(sentences)), rng.integers(0, args.annotators, len(sentences))].tolist()
        unit = error_unit(language)
        best = [
            min(row, key=lambda t, truth=truth: Levenshtein.distance(*_seqs(truth, t, language, unit)))
            for row, truth in zip(by_task, sentences, strict=True)
        ]
        print(
            f"{language} {metric} against the truth, {len(sentences):,} tasks: medoid "
            f"{corpus_rate(sentences, consensus, language):.4f}, random annotator "
            f"{corpus_rate(sentences, random_pick, language):.4f}, best transcript per task (oracle) "
            f"{corpus_rate(sentences, best, language):.4f}"
        )
        subset = min(len(sentences), args.rover_tasks // 2)
        began = time.perf_counter()
        rover = [rover_transcript([normalise_transcript(t, language) for t in row], unit) for row in by_task[:subset]]
        rover_seconds = time.perf_counter() - began
        print(
            f"{language} {metric} on the first {subset:,} tasks: ROVER {corpus_rate(sentences[:subset], rover, language):.4f} "
            f"({rover_seconds:.2f} s), medoid {corpus_rate(sentences[:subset], consensus[:subset], language):.4f}, "
            f"random annotator {corpus_rate(sentences[:subset], random_pick[:subset], language):.4f}"
        )
    print(f"peak RSS of the whole run {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def _seqs(reference: str, hypothesis: str, language: str, unit: str) -> tuple[object, object]:
    ref, hyp = normalise_transcript(reference, language), normalise_transcript(hypothesis, language)
    return (ref.split(), hyp.split()) if unit == "word" else (ref, hyp)


if __name__ == "__main__":
    main()
