"""Emotion probe accuracy on 'cue' tokens, whose next token starts a choice that depends on
the subject's emotion, versus every other word token of the sentences that do not name it.

Storyworld v3 cues: the name (before the predicate), a behaviour verb (before its manner),
" the" (before an object that leans on the feeling), the object (before its manner), the
manner or the interjection (before the final punctuation). Non-cue: " said", an object verb
before " the", and "Oh" before " no" or " dear" (which does depend on the feeling: this
definition undercounts cues slightly).

    python benchmarks/experiments/probe_cue_tokens.py storyworld-4l [threads] [--checkpoint]

With --checkpoint it reads runs/<name>/state.safetensors (a run in progress) instead of the
model in data/models.
"""
import json, sys, tempfile
import torch
args = [a for a in sys.argv[1:] if not a.startswith("--")]
torch.set_num_threads(int(args[1]) if len(args) > 1 else 1)
from utils import evaluate as ev, storyworld, train
from utils.models import load_model
from utils.tokenizer import load_tokenizer
tok = load_tokenizer()


def choice_starts(d, s):
    """Character offsets in d.text where an emotion-dependent choice of sentence s starts."""
    a0, b0 = s["span"]
    text = d.text[a0:b0]
    starts = {a0 + len(s["subject"])}                        # the predicate
    body = text.rstrip('"')
    end = len(body.rstrip(".!"))
    starts.add(a0 + end)                                     # the final punctuation
    if s["kind"] == "speech":
        starts.add(a0 + text.index(' "'))                    # the interjection
    else:
        manner = body.rindex(" ", 0, end)
        starts.add(a0 + manner)                              # the manner
        if s["kind"] == "object":
            starts.add(a0 + body.rindex(" ", 0, manner))     # the object
    return starts


def cue_mask(docs):
    out = []
    for d in docs:
        spans = ev.token_spans(d.text, tok)
        for s in d.annotations["sentences"]:
            if s["names_emotion"] or "emotion" not in s:
                continue
            a0, b0 = s["span"]
            starts = choice_starts(d, s)
            for i, (a, b) in enumerate(spans):
                if a < b0 and b > a0:
                    nxt = spans[i + 1] if i + 1 < len(spans) else (10**9, 10**9)
                    out.append(any(nxt[0] <= c < nxt[1] for c in starts))
    return torch.tensor(out)


name = args[0]
if "--checkpoint" in sys.argv:
    from safetensors.torch import load_file
    from transformer_lens.model_bridge import TransformerBridge
    spec = train.SPECS[name]
    m = train.build_model(spec, len(tok))
    sd = load_file(f"runs/{name}/state.safetensors")
    m.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.")})
    meta = json.load(open(f"runs/{name}/state.json"))
    print(f"{name} checkpoint at step {meta['step']} ({meta['step'] * spec.batch * spec.n_ctx / 1e6:.1f}M tokens)")
    tmp = tempfile.mkdtemp(); m.save_pretrained(tmp, safe_serialization=True); tok.save_pretrained(tmp)
    m = TransformerBridge.boot_transformers(tmp, device="cpu", tokenizer=tok, dtype=torch.float32)
    m.eval()
else:
    m = load_model(name)
    print(name, "from data/models")
tr = storyworld.sample_docs(ev.PROBE_TRAIN_SEED, 1000, "narrative")
te = [d for d in storyworld.sample_docs(ev.EVAL_SEED, 2000) if d.family == "narrative"][:500]
xtr, ytr, rtr, ctr, _ = ev.emotion_dataset(m, tr)
xte, yte, rte, cte, _ = ev.emotion_dataset(m, te)
cue_te = cue_mask(te)
assert len(cue_te) == len(yte), (len(cue_te), len(yte))
wt = rte != ev.PROBE_ROLES.index("punctuation")
print(f"cue share of word tokens {cue_te[wt].float().mean():.3f}")
for l in range(xtr.shape[0]):
    w = rtr != ev.PROBE_ROLES.index("punctuation")
    p = ev.fit_probe(xtr[l][w], ytr[w], 12)
    with torch.no_grad():
        hit = (p(xte[l]).argmax(-1) == yte).float()
    parts = [f"words {hit[wt].mean():.3f}", f"cue {hit[wt & cue_te].mean():.3f}",
             f"non-cue {hit[wt & ~cue_te].mean():.3f}"]
    for c in (1, 2):
        parts.append(f"words/{c}ch {hit[wt & (cte == c)].mean():.3f}")
    print("layer", l, *parts, flush=True)
