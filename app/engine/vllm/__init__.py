"""The vLLM backend: adaptd renders prompts to token ids, vLLM OpenAI servers generate.

engine.py   VllmEngine: the engine interface, on an event loop thread of its own
servers.py  the server pool: health, rendezvous hashing with adapter affinity
client.py   one server's HTTP calls: streamed completions, adapter load/unload
output.py   streamed token ids -> text deltas and the final result, as the built-in
            engine produces them (same detokenizer, stop sequences, logprobs)
launch.py   the command line of a local vLLM CPU server (make run, tests, benchmarks)
"""
