"""Put a checkpoint that came back from scripts/train_gpu.sh in parts (model-0.safetensors, model-1..., each under
16 MiB: two at depth 4, three at depth 5) together again.

    python scripts/join_halves.py FOLDER_WITH_PARTS CHECKPOINT_FOLDER
"""
import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from microturn.model import checkpoint

if len(sys.argv) != 3:
    sys.exit(f"usage: {sys.argv[0]} FOLDER_WITH_PARTS CHECKPOINT_FOLDER")
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
n = len(list(src.glob("model-*.safetensors")))
missing = [p for p in [f"model-{i}.safetensors" for i in range(max(n, 1))] + ["config.json"] if not (src / p).exists()]
if missing:
    sys.exit(f"{src} lacks {', '.join(missing)}: not a folder that scripts/train_gpu.sh returned")
w = {}
for i in range(n):
    w |= load_file(src / f"model-{i}.safetensors")
dst.mkdir(parents=True, exist_ok=True)
save_id = json.loads((src / "config.json").read_text()).get("save_id")  # the config's: the two are one save
save_file(w, dst / checkpoint.WEIGHTS, metadata={"format": checkpoint.FORMAT, "version": str(checkpoint.VERSION)}
          | ({"save_id": save_id} if save_id else {}))
shutil.copy(src / "config.json", dst / checkpoint.CONFIG)
m = checkpoint.load(dst)  # checks every tensor against the config
print(f"{dst}: {m.n_params():,} parameters, step {m.checkpoint_info['step']}")
