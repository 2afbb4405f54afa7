"""Emotion probe accuracy on 'cue' tokens: tokens whose next token starts a choice that
depends on the subject's emotion (the predicate after the name, the manner after a
behaviour verb, the interjection after 'said,'), versus every other word token."""
import sys, torch
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
from utils import evaluate as ev, storyworld
from utils.models import load_model
from utils.tokenizer import load_tokenizer
tok = load_tokenizer()
MANNERS = [m for m, _ in storyworld.MANNERS]

def cue_mask(docs):
    out = []
    for d in docs:
        spans = ev.token_spans(d.text, tok)
        for s in d.annotations["sentences"]:
            if s["names_emotion"] or "emotion" not in s:
                continue
            a0, b0 = s["span"]
            idx = [i for i, (a, b) in enumerate(spans) if a < b0 and b > a0]
            text = d.text[a0:b0]
            starts = {a0 + len(s["subject"])}  # predicate
            if s["kind"] == "behaviour":
                starts.add(a0 + text.rindex(" "))  # " warmly."
            if s["kind"] == "speech":
                starts.add(a0 + text.index(' "'))
            for i in idx:
                nxt = spans[i + 1] if i + 1 < len(spans) else (10**9, 10**9)
                out.append(any(nxt[0] <= c < nxt[1] or nxt[0] == c for c in starts))
    return torch.tensor(out)

m = load_model(sys.argv[1])
tr = storyworld.sample_docs(9001, 1000, "narrative")
te = [d for d in storyworld.sample_docs(9000, 2000) if d.family == "narrative"][:500]
xtr, ytr, rtr, ctr, _ = ev.emotion_dataset(m, tr)
xte, yte, rte, cte, _ = ev.emotion_dataset(m, te)
cue_tr, cue_te = cue_mask(tr), cue_mask(te)
assert len(cue_te) == len(yte), (len(cue_te), len(yte))
print("cue share of word tokens", cue_te[rte != 2].float().mean().item())
for l in range(xtr.shape[0]):
    w = rtr != 2
    p = ev.fit_probe(xtr[l][w], ytr[w], 12)
    with torch.no_grad():
        hit = (p(xte[l]).argmax(-1) == yte).float()
    wt = rte != 2
    parts = [f"words {hit[wt].mean():.3f}", f"cue {hit[wt & cue_te].mean():.3f}", f"non-cue {hit[wt & ~cue_te].mean():.3f}"]
    for c in (1, 2):
        parts.append(f"cue/{c}ch {hit[wt & cue_te & (cte == c)].mean():.3f}")
    print("layer", l, *parts, flush=True)
