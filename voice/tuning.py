"""Two defaults of the phone line's listening, measured on the speech fixtures (bench/RESULTS.md), kept
here so that the settings can name them without importing the audio code (numpy, scipy, onnxruntime)."""

# Quiet that ends an utterance (VOICE_ENDPOINT_S). A caller's pause at a comma is 0.5-0.75 s in the
# speech fixtures: at 0.5 s the endpointer cut 17 of the 134 held-out sentences after their first
# clause (the recogniser then heard half a request), at 0.6 s 4, at 0.7 and 0.8 s none. 0.8 leaves
# room for real callers, who pause longer than a synthetic voice; with it intent accuracy on
# recognised speech rose 0.75 -> 0.80 (bench/RESULTS.md), for 0.3 s more before each answer.
ENDPOINT_S = 0.8

# Whisper's beam width (VOICE_WHISPER_BEAM; 1 is greedy). On the 134 held-out fixtures beam 5 wrote 0.41
# of the characters wrong where greedy decoding wrote 0.435 (0.36 with the 0.8 s endpoint), for about
# 17 % more decoding time (p50).
WHISPER_BEAM = 5
