"""Experiment (run with PYTHONPATH=. from the repository root): does storyworld-4l grow an induction head with more tokens? Warm start from the
committed weights, constant lr, log head scores every 100 steps."""
import torch, time, sys
torch.set_num_threads(2)
from transformers import GPT2LMHeadModel
from utils import train, evaluate as ev
from utils.tokenizer import load_tokenizer
tok = load_tokenizer()
m = GPT2LMHeadModel.from_pretrained("data/models/storyworld-4l", dtype=torch.float32, attn_implementation="eager")
m.train()
spec = train.SPECS["storyworld-4l"]
data = train.PackedStream(12, 256, tok, cursor=400_000)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
seqs = ev.repeated_random_tokens(8, seed=4242, min_period=10, max_period=40)
t0 = time.time()
for step in range(1, 100000):
    rows = data.batch(32)
    loss = train.lm_loss(m, rows)
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step()
    if step % 100 == 0:
        m.eval()
        with torch.no_grad():
            L = m.config.n_layer; best = 0; drops = []
            for ids, p in seqs:
                x = torch.tensor([ids])
                out = m(x, output_attentions=True)
                lp = torch.log_softmax(out.logits[0], -1)[:-1].gather(-1, x[0, 1:, None])[:, 0]
                drops.append((-lp[:p].mean() + lp[p + 1:].mean()).item())
                q2 = torch.arange(p + 1, 2 * p + 1)
                sc = torch.stack([a[0][:, q2, q2 - p + 1].mean(-1) for a in out.attentions])
                best = max(best, sc.max().item())
        print(f"step {step} tokens {step * 8192 / 1e6:.1f}M loss {loss.item():.3f} ind {best:.2f} drop {sum(drops) / len(drops):.2f} t {time.time() - t0:.0f}s", flush=True)
        m.train()
