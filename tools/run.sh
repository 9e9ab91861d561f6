#!/bin/sh
# run.sh: what `make run` executes (sh tools/run.sh BUILD/exsa). Serves MODEL_PATH when it is set;
# otherwise writes a small LFM2 demo model with random weights (exsa synth --preset demo, once,
# next to the binary) and serves that, after a banner saying its text is noise. Every variable
# of EXSA-API.md (HOST, PORT, API_KEY, ...) passes through to exsa serve.
set -e
exsa=${1:-build/exsa}
if [ -n "$MODEL_PATH" ]; then
    exec "$exsa" serve
fi
demo="$(dirname "$exsa")/demo.gguf"
if [ ! -f "$demo" ]; then
    echo "run.sh: writing the demo model $demo (random weights)"
    "$exsa" synth --preset demo -o "$demo.tmp"
    mv "$demo.tmp" "$demo"
fi
cat <<BANNER
======================================================================================
 Exsa demo: serving $demo, an LFM2 model with RANDOM weights.
 It answers every route, but its text is noise. To serve a real model, get an LFM2
 GGUF (e.g. LiquidAI/LFM2-1.2B-GGUF on Hugging Face) and run:
     MODEL_PATH=/path/to/LFM2-1.2B-Q4_K_M.gguf make run
 or  $exsa serve -m /path/to/model.gguf
 Listening on http://${HOST:-127.0.0.1}:${PORT:-3000}  (try: curl localhost:${PORT:-3000}/v1/health)
======================================================================================
BANNER
MODEL_PATH="$demo" exec "$exsa" serve
