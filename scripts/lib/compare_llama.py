"""earshot vs llama.cpp (llama-cpp-python) on the same GGUF files.

Run through scripts/compare-llama-cpp, which prepares the virtualenv, the
models and the earshot binary. Reports, per model:

- tokenization: whether both give the same prompt token ids;
- agreement: how many leading greedy tokens are identical (temperature 0,
  no repetition penalty, same prompt ids; llama.cpp with an f32 KV cache,
  as earshot keeps, since its default f16 cache alone flips near-ties);
- speed (--speed): single-stream decode tokens/s of each engine on the same
  prompt and length (time after the first generated token, so prefill is
  excluded), and earshot's aggregate decode tokens/s at 1, 4 and 8
  concurrent sequences.
"""

import argparse
import json
import os
import subprocess
import sys
import time

PROMPTS = [
    ("completion", "The capital of France is"),
    ("completion", "A good meeting summary lists the decisions, the owners and the dates. For example:"),
    ("completion", "def fibonacci(n):\n    "),
    ("chat", "Summarize in one sentence: Good morning everyone. Shall we start with the launch date? "
             "Yes. The factory says the first shipment will be ready in two weeks. Great. Then marketing "
             "can start the online campaign on Monday."),
    ("chat", "List three uses of a bicycle."),
]


def earshot(binary, model, args, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), EARSHOT_LOG="error")
    cmd = [binary, "generate", "--llm-model", model, "--format", "json", "--repeat-penalty", "1"] + args
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def leading_agreement(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--earshot", required=True)
    ap.add_argument("--models", required=True, help="name=path.gguf,...")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--speed-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-agree", default="", help="name=N,...: fail if the mean leading agreement is below N")
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    from llama_cpp import Llama

    min_agree = dict(kv.split("=") for kv in a.min_agree.split(",") if kv)
    report = {"threads": a.threads, "models": {}}
    failed = False
    for spec in a.models.split(","):
        name, path = spec.split("=", 1)
        # Agreement against llama.cpp's default f16 KV cache and against an
        # f32 cache like earshot's: on these small models the cache type alone
        # flips near-tied tokens, so both are reported.
        llm = Llama(model_path=path, n_ctx=2048, n_threads=a.threads, n_threads_batch=a.threads,
                    n_batch=512, verbose=False)
        llm32 = Llama(model_path=path, n_ctx=2048, n_threads=a.threads, n_threads_batch=a.threads,
                      n_batch=512, verbose=False, type_k=0, type_v=0)
        eos = llm.token_eos()
        rows = []
        print(f"== {name} ({os.path.basename(path)}) ==")
        for kind, text in PROMPTS:
            flag = "--prompt" if kind == "completion" else "--chat"
            e = earshot(a.earshot, path, [flag, text, "--max-tokens", str(a.tokens)], a.threads)
            ids = e["prompt_ids"]
            if kind == "completion":
                peer_ids = llm.tokenize(text.encode(), add_bos=True, special=True)
            else:
                # The chat prompt earshot rendered, re-tokenized by llama.cpp.
                rendered = llm.detokenize(ids, special=True).decode("utf-8", "replace")
                peer_ids = llm.tokenize(rendered.encode(), add_bos=False, special=True)
            same_tok = peer_ids == ids
            def greedy(model):
                out = []
                for tok in model.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
                    if tok == eos or len(out) >= a.tokens:
                        break
                    out.append(tok)
                return out
            peer, peer32 = greedy(llm), greedy(llm32)
            ours = e["tokens"]
            agree, agree32 = leading_agreement(ours, peer), leading_agreement(ours, peer32)
            full, full32 = min(len(ours), len(peer)), min(len(ours), len(peer32))
            rows.append({"kind": kind, "prompt": text[:60], "same_tokenization": same_tok,
                         "prompt_tokens": len(ids), "agree": agree, "compared": full,
                         "agree_f32_cache": agree32, "compared_f32_cache": full32,
                         "earshot_text": e["text"][:120], "llama_text": llm.detokenize(peer).decode("utf-8", "replace")[:120]})
            print(f"  {kind:10} tokenization {'same' if same_tok else 'DIFFERENT'} ({len(ids):2} ids); "
                  f"leading agreement {agree:2}/{full:2} (f16 cache) {agree32:2}/{full32:2} (f32 cache)  | {text[:36]!r}")
            if not same_tok:
                failed = True
                print(f"    earshot {ids[:20]}\n    llama   {peer_ids[:20]}")
        mean16 = sum(r["agree"] for r in rows) / len(rows)
        mean32 = sum(r["agree_f32_cache"] for r in rows) / len(rows)
        mean = max(mean16, mean32)
        print(f"  mean leading agreement: {mean16:.1f} (f16 cache), {mean32:.1f} (f32 cache) tokens of {a.tokens}")
        entry = {"prompts": rows, "mean_agreement_f16_cache": mean16, "mean_agreement_f32_cache": mean32}
        if name in min_agree and mean < float(min_agree[name]):
            print(f"  FAIL: mean agreement {mean:.1f} < {min_agree[name]}")
            failed = True

        if a.speed:
            # Speed: llama.cpp's defaults (f16 KV cache), its fastest usual setup.
            del llm32
            prompt = "Write a long story about a lighthouse keeper and the sea."
            ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            best = 0.0
            for _ in range(2):
                t_first = None
                n = 0
                for tok in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
                    n += 1
                    if t_first is None:
                        t_first = time.perf_counter()
                    if n >= a.speed_tokens:
                        break
                rate = (n - 1) / (time.perf_counter() - t_first)
                best = max(best, rate)
            entry["llama_cpp_decode_tps"] = best
            ours = {}
            for c in (1, 4, 8):
                runs = [earshot(a.earshot, path, ["--prompt", prompt, "--max-tokens", str(a.speed_tokens),
                                                  "--ignore-eos", "--copies", str(c), "--llm-batch", "8"], a.threads)
                        for _ in range(2)]
                ours[c] = max(r["decode_tokens_per_s"] for r in runs)
            entry["earshot_decode_tps"] = ours
            print(f"  speed ({a.threads} threads, {a.speed_tokens} tokens, greedy):")
            print(f"    llama.cpp single stream      {best:7.1f} tok/s")
            for c in (1, 4, 8):
                extra = f"  = {ours[c] / best:.2f}x llama.cpp" if c == 1 else f"  = {ours[c] / ours[1]:.2f}x earshot single"
                print(f"    earshot {c} concurrent        {ours[c]:7.1f} tok/s{extra}")
        report["models"][name] = entry
        del llm
        if not a.speed:
            del llm32
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
