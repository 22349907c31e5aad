"""Chat: time to first token and decode tokens/s with 1, 3 and 8 turns of history, against the ceiling.

    python -m bench.chat --model-dir DIR [--turns 1,3,8] [--reps 3] [--max-new-tokens 64]
    python -m bench.chat --shape qwen1.5-0.5b

The fixed-history levels are measured cold (no conversation KV reuse: each is a first visit). Then one
growing conversation of eight turns, the model's own greedy replies sent back as the history (as the
page does), turn by turn with conversation KV reuse and without: the time to first token per turn,
and how many prompt tokens each turn found already read.

Measured through the product's path (`engine.chat`: history trimming, chat template, generate() in a
thread, the text streamer), and again with a bare loop (model forward + KV cache + argmax, no
generate(), no streamer) on the same prompt, so the gap to the ceiling splits into "the model on this
CPU" and "our Python around it".

Ceiling for decode: this machine's memory read bandwidth (measured in the same run) divided by the
bytes one decoded token must read: every FP32 weight except the embedding lookup (lm_head included)
plus the KV cache of the context. Also reported: the same bytes at the rate the fastest batch-1
matrix-vector kernel streams weights on this machine (F.linear and the engine's oneDNN-packed linear,
each over 1 GiB of MLP-shaped matrices), which is what a decode step built from those kernels can reach. Floor for the first token: the prompt's FLOPs divided by the
measured FP32 matmul throughput (prefill is compute-bound).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Sequence

import torch

from . import machine
from .common import CpuShare, Deadline, base_parser, in_turn, in_worker_thread, load, provenance, resolve_model_dir, result_path, summary, write_result

from pipeline.growing_cache import GrowingCache
from pipeline.kv_store import ConversationCache

# A fixed conversation (no review data): eight user/assistant turns of everyday length.
HISTORY = [
    ("你好！我最近想开始跑步，但是一直坚持不下来，有什么建议吗？",
     "可以从每周三次、每次二十分钟的慢跑开始，给自己定一个小目标，比如一个月后能连续跑三公里。找个跑步伙伴或者用打卡软件记录，也很有帮助。"),
    ("那跑步前后需要做哪些准备和拉伸？",
     "跑前做五到十分钟的动态热身，比如高抬腿、开合跳和弓步走；跑后做静态拉伸，重点是大腿前后侧、小腿和髋部，每个动作保持二十到三十秒。"),
    ("我膝盖有时候会有点疼，还能继续跑吗？",
     "如果只是轻微酸胀，可以降低强度、缩短距离，并选择塑胶跑道等较软的路面；如果是刺痛或者肿胀，建议先停跑休息，并尽快去医院检查。"),
    ("跑鞋应该怎么选？",
     "先了解自己的足弓类型和落地方式，再去专业店试穿。试鞋最好在下午，穿跑步用的袜子，脚尖前留一指宽的空间，缓震和稳定性要适合自己的体重。"),
    ("跑步的时候怎么呼吸比较好？",
     "可以试试两步一吸、两步一呼的节奏，用鼻子和嘴一起呼吸。速度以能说完整的短句为准，如果喘得说不出话，说明跑得太快了。"),
    ("早上跑步好还是晚上跑步好？",
     "两者各有好处：早上空气清新、能提神，但要先吃点东西补充能量；晚上身体更舒展，表现往往更好，只是不要在睡前一小时内剧烈运动。"),
    ("跑完步饮食上要注意什么？",
     "跑后三十分钟内补充一些碳水和蛋白质，比如香蕉配牛奶或者一个鸡蛋三明治；平时多喝水，少吃油炸食品，保证睡眠，身体恢复得更快。"),
    ("我想三个月后参加一个十公里比赛，来得及吗？",
     "如果现在能连续跑五公里，三个月准备十公里是来得及的。每周安排一次长距离慢跑，每周增加不超过百分之十的跑量，再加一次间歇跑练速度。"),
]
MESSAGE = "请帮我制定一个详细的每周训练计划，并解释每一天的安排。"


def history_messages(turns: int) -> list[dict[str, str]]:
    out = []
    for user, assistant in HISTORY[:turns]:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def engine_run(engine, turns: int, max_new_tokens: int) -> dict[str, Any]:
    """One reply through engine.chat, consumed as a client would."""
    torch.manual_seed(0)
    history = history_messages(turns)
    started = time.perf_counter()
    request = engine.prepare(MESSAGE, history, mode="chat", tags=False)  # checked and tokenized, as a request is
    stream = engine.chat(request, max_new_tokens=max_new_tokens)
    pieces = sum(1 for _ in stream)
    wall_ms = (time.perf_counter() - started) * 1000
    decode_s = (stream.latency_ms - stream.first_token_ms) / 1000 if stream.first_token_ms is not None else None
    return {"prompt_tokens": len(request.prompt_ids), "history_dropped": request.history_dropped, "new_tokens": stream.new_tokens,
            "pieces": pieces, "finish_reason": stream.finish_reason, "first_token_ms": stream.first_token_ms,
            "latency_ms": stream.latency_ms, "wall_ms": wall_ms,
            "decode_tps": (stream.new_tokens - 1) / decode_s if decode_s and stream.new_tokens > 1 else None}


def conversation_run(engine, reuse: bool, max_new_tokens: int) -> list[dict[str, Any]]:
    """One conversation of len(HISTORY) turns (greedy), each reply sent back as history; a row per turn."""
    store, sampling = engine.conversations, engine.generation_config.do_sample
    budget = store.budget_bytes if store is not None else 512 * 2**20
    engine.conversations = ConversationCache(budget) if reuse else None  # a first visit for each series
    engine.generation_config.do_sample = False  # both series say the same, so they read the same tokens
    try:
        history, rows = [], []
        for turn, (user, _) in enumerate(HISTORY, start=1):
            request = engine.prepare(user, history, mode="chat", tags=False)
            stream = engine.chat(request, max_new_tokens=max_new_tokens)
            text = "".join(stream)
            rows.append({"turn": turn, "prompt_tokens": len(request.prompt_ids), "history_dropped": request.history_dropped,
                         "reused_tokens": engine.conversations.last_reused if reuse else 0,
                         "first_token_ms": stream.first_token_ms, "new_tokens": stream.new_tokens})
            history += [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        if reuse:
            rows[-1]["kv_store_bytes"] = engine.conversations.bytes
        return rows
    finally:
        engine.conversations, engine.generation_config.do_sample = store, sampling


def bare_run(engine, turns: int, new_tokens: int) -> dict[str, Any]:
    """The same prompt with a bare loop: one prefill forward, then one forward per token (greedy), on the
    engine's KV cache (GrowingCache)."""
    prompt_ids = list(engine.prepare(MESSAGE, history_messages(turns), mode="chat", tags=False).prompt_ids)
    model = engine.model
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=torch.tensor([prompt_ids]), past_key_values=GrowingCache(), use_cache=True, logits_to_keep=1)
        token = int(out.logits[0, -1].argmax())
        prefill_ms = (time.perf_counter() - t0) * 1000
        cache, steps = out.past_key_values, []
        for _ in range(new_tokens - 1):
            t = time.perf_counter()
            out = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True, logits_to_keep=1)
            token = int(out.logits[0, -1].argmax())
            cache = out.past_key_values
            steps.append((time.perf_counter() - t) * 1000)
    return {"prompt_tokens": len(prompt_ids), "prefill_ms": prefill_ms, "step_ms": summary(steps),
            "decode_tps": 1000 / statistics.median(steps) if steps else None,
            "decode_tps_best": 1000 / min(steps) if steps else None}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--turns", default="1,3,8", help="turns of history (user+assistant pairs), comma-separated")
    p.add_argument("--reps", type=int, default=3, help="replies per history length (engine path)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--bare-tokens", type=int, default=32, help="tokens per bare-loop run")
    p.add_argument("--time-budget", type=float, default=1800)
    p.add_argument("--bandwidth-gib", type=float, default=1.5)
    p.add_argument("--conversation-tokens", type=int, default=48, help="reply tokens per turn of the growing conversation")
    args = p.parse_args(argv)
    turns_list = [int(x) for x in args.turns.split(",") if x]
    model_dir, model = resolve_model_dir(args)
    engine = load(model_dir, threads=args.threads)
    prov = provenance(model, engine)
    cost = machine.model_cost(engine.model)

    def timed():
        store, engine.conversations = engine.conversations, None  # the fixed levels are measured cold
        engine_run(engine, 1, 4)  # warm-up
        bare_run(engine, 1, 4)
        measured = [machine.measure(engine.model, args.bandwidth_gib, gemv=True)]
        deadline, cpu = Deadline(args.time_budget), CpuShare()
        levels = []
        for turns in turns_list:
            runs, bares = [], []
            for rep in range(args.reps):
                if deadline.expired:
                    break
                for path in in_turn(("engine", "bare"), rep):  # background load hits both paths alike
                    if path == "engine":
                        runs.append(engine_run(engine, turns, args.max_new_tokens))
                    else:
                        bares.append(bare_run(engine, turns, args.bare_tokens))
            if runs:
                levels.append((turns, runs, bares))
            measured.append(machine.measure(engine.model, args.bandwidth_gib, gemv=True))
        engine.conversations = store
        conversation = {"fresh": conversation_run(engine, False, args.conversation_tokens),
                        "reuse": conversation_run(engine, True, args.conversation_tokens)}
        return levels, measured, cpu.stop(), deadline.expired, conversation

    levels, measured, cpu_share, truncated, conversation = in_worker_thread(timed)
    for name, rows in conversation.items():
        print(f"conversation, {name}: TTFT per turn " + ", ".join(f"{r['first_token_ms']:.0f}" for r in rows)
              + " ms; reused " + ", ".join(str(r["reused_tokens"]) for r in rows), file=sys.stderr, flush=True)
    limits = machine.best_of(*measured)
    by_turns = []
    for turns, runs, bares in levels:
        prompt = runs[0]["prompt_tokens"]
        mid_context = prompt + args.max_new_tokens // 2
        bw = limits["bandwidth"]["best_gbs"] * 1e9
        row = {
            "turns": turns, "prompt_tokens": prompt, "runs": runs, "bare": bares,
            "ttft_ms": summary(r["first_token_ms"] for r in runs if r["first_token_ms"] is not None),
            "decode_tps": summary(r["decode_tps"] for r in runs if r["decode_tps"]),
            "bare_prefill_ms": summary(b["prefill_ms"] for b in bares),
            "bare_decode_tps": summary(b["decode_tps"] for b in bares if b["decode_tps"]),
            "new_tokens": summary(r["new_tokens"] for r in runs),
            "ceiling": {
                "bytes_per_token": cost.decode_bytes(mid_context), "kv_bytes": cost.kv_bytes(mid_context),
                "context": mid_context, "bandwidth_gbs": bw / 1e9,
                "decode_tps": bw / cost.decode_bytes(mid_context),
                "ttft_floor_ms": cost.forward_flops(prompt, 0, 1) / (limits["matmul"]["peak_gflops"] * 1e9) * 1000,
                "gemv_gbs": limits.get("gemv_bandwidth", {}).get("best_gbs"),
                "gemv_kernel": limits.get("gemv_bandwidth", {}).get("kernel"),
                "decode_tps_at_gemv_rate": (limits["gemv_bandwidth"]["best_gbs"] * 1e9 / cost.decode_bytes(mid_context))
                if limits.get("gemv_bandwidth") else None,
            },
        }
        row["decode_fraction_of_ceiling"] = row["decode_tps"]["median"] / row["ceiling"]["decode_tps"] if row["decode_tps"].get("median") else None
        row["bare_fraction_of_ceiling"] = row["bare_decode_tps"]["median"] / row["ceiling"]["decode_tps"] if row["bare_decode_tps"].get("median") else None
        by_turns.append(row)
        print(f"turns {turns}: prompt {prompt} tok, TTFT median {row['ttft_ms'].get('median', float('nan')):.0f} ms "
              f"(floor {row['ceiling']['ttft_floor_ms']:.0f}), decode {row['decode_tps'].get('median', float('nan')):.2f} tok/s "
              f"(bare {row['bare_decode_tps'].get('median', float('nan')):.2f}, ceiling {row['ceiling']['decode_tps']:.2f})",
              file=sys.stderr, flush=True)
    result = {"bench": "chat", "provenance": prov, "cpu_share": cpu_share, "limits": limits,
              "limits_runs": measured, "cost": cost.as_dict(), "max_new_tokens": args.max_new_tokens,
              "bare_tokens": args.bare_tokens, "message": MESSAGE, "by_turns": by_turns, "truncated": truncated,
              "conversation": conversation, "conversation_tokens": args.conversation_tokens}
    write_result(result_path(args, "chat", model), result)
    return result


if __name__ == "__main__":
    main()
