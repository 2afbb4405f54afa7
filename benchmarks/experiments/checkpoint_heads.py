import sys, json, torch, tempfile
torch.set_num_threads(1)
from safetensors.torch import load_file
from utils import train, evaluate as ev
from utils.tokenizer import load_tokenizer
from transformer_lens.model_bridge import TransformerBridge
name = sys.argv[1]
spec = train.SPECS[name]; tok = load_tokenizer()
m = train.build_model(spec, len(tok))
sd = load_file(f"runs/{name}/state.safetensors")
m.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.")})
meta = json.load(open(f"runs/{name}/state.json"))
d = tempfile.mkdtemp(); m.save_pretrained(d, safe_serialization=True); tok.save_pretrained(d)
b = TransformerBridge.boot_transformers(d, device="cpu", tokenizer=tok, dtype=torch.float32); b.eval()
h = ev.head_scores(b, ev.repeated_random_tokens(30))
print(meta["step"], meta["step"] * 8192 / 1e6, "M prev", [round(max(x), 2) for x in h["prev_token_scores"]],
      "ind", [round(max(x), 2) for x in h["induction_scores"]], "copy %.2f->%.2f" % (h["loss_first_copy"], h["loss_second_copy"]), flush=True)
