"""How fast SAELens trains one of the zoo's SAEs on a 2-core CPU, three ways.

1. ``model in the loop``: SAELens's ``LanguageModelSAETrainingRunner`` with our model and an
   in-memory token dataset; the model runs while the SAE trains.
2. ``SAELens's cache``: SAELens's ``CacheActivationsRunner`` writes the activations to disk,
   then the same runner trains from them (``use_cached_activations``).
3. ``trainer driven directly``: our own activation cache (``utils.model_zoo.saes.cached_activations``),
   then SAELens's ``SAETrainer`` fed from memory (``utils.model_zoo.saes.fit``), the path ``make zoo`` uses.

Each path trains the default SAE's architecture on the same number of tokens; the tokens per
second count the whole path, activations included. Writes ``benchmarks/sae_paths.json``.

    python scripts/sae_paths.py [--tokens 200000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import paths  # noqa: E402
from utils.model_zoo import saes  # noqa: E402
from utils.model_zoo.models import load_model  # noqa: E402
from utils.model_zoo.registry import DEFAULT_SAE, SAES  # noqa: E402


def _two_stages(tokens: int, cached: float, trained: float) -> dict:
    """A path that caches activations, then trains: its time and its rates, whole and by stage."""
    return {
        "seconds": round(cached + trained, 1),
        "tokens_per_s": round(tokens / (cached + trained)),
        "caching_tokens_per_s": round(tokens / cached),
        "training_tokens_per_s": round(tokens / trained),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--sae", default=DEFAULT_SAE, choices=sorted(SAES))
    args = ap.parse_args(argv)
    spec, tokens = SAES[args.sae], args.tokens
    from sae_lens import LanguageModelSAETrainingRunner

    model = load_model(spec.model, "cpu")
    rows = tokens // saes.N_CTX + 16
    results = {"sae": spec.name, "tokens": tokens, "threads": torch.get_num_threads(), "paths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        t = time.time()
        runner = LanguageModelSAETrainingRunner(
            saes.runner_config(spec, tokens),
            override_model=model,
            override_dataset=saes.token_dataset(spec.data_seed, rows),
        )
        runner.run()
        total = time.time() - t
        results["paths"]["model in the loop"] = {"seconds": round(total, 1), "tokens_per_s": round(tokens / total)}

        t = time.time()
        saes.sae_lens_cache(spec, model, tokens, tmp / "sae_lens_cache")
        cached = time.time() - t
        cfg = saes.runner_config(spec, tokens)
        cfg.use_cached_activations = True
        cfg.cached_activations_path = str(tmp / "sae_lens_cache")
        t = time.time()
        LanguageModelSAETrainingRunner(
            cfg, override_model=model, override_dataset=saes.token_dataset(spec.data_seed, rows)
        ).run()
        trained = time.time() - t
        results["paths"]["SAELens's cache"] = _two_stages(tokens, cached, trained)

        t = time.time()
        acts = saes.cached_activations(spec, model, tokens, tmp / "ours")
        cached = time.time() - t
        t = time.time()
        saes.fit(acts, spec.architecture, spec.d_sae, spec.k or spec.target_l0, tokens, spec.batch, spec.lr)
        trained = time.time() - t
        results["paths"]["trainer driven directly"] = _two_stages(tokens, cached, trained)
    shutil.rmtree(paths.RUNS / "saes" / "runner", ignore_errors=True)
    out = paths.BENCHMARKS / "sae_paths.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    for name, r in results["paths"].items():
        print(f"{name:26s} {r['tokens_per_s']:>7,} tokens/s ({r['seconds']} s)")
    print(f"wrote {paths.shown(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
