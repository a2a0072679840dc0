#!/usr/bin/env python3
"""Post bodies that compress like real ones (zstd -1 about 3x, not 11x):
words of English-like letter frequencies and lengths from a 40,000-word
vocabulary drawn with a Zipf law, some capitalised, some numbers, commas and
full stops, wrapped in a Gutenberg paragraph. One body per line (no tab, no
newline inside), deterministic for a given count.

    bench/post_text.py COUNT OUT [ZIPF_S]
"""
import itertools, random, sys
random.seed(11)
letters = "etaoinshrdlcumwfgypbvkjxqz"
weights = [12.7,9.1,8.2,7.5,7.0,6.7,6.3,6.1,6.0,4.3,4.0,2.8,2.8,2.4,2.4,2.2,2.0,2.0,1.9,1.5,1.0,0.8,0.15,0.15,0.1,0.07]
V = 40000
vocab = []
for i in range(V):
    n = max(1, min(14, int(random.gauss(5.2, 2.4))))
    vocab.append("".join(random.choices(letters, weights, k=n)))
# Zipf over vocab
s = float(sys.argv[3]) if len(sys.argv) > 3 else 1.3
cum = list(itertools.accumulate(1 / (r ** s) for r in range(1, V + 1)))
def body(nwords):
    out = []
    for w in random.choices(vocab, cum_weights=cum, k=nwords):
        r = random.random()
        if r < 0.06: w = w.capitalize()
        elif r < 0.08: w = str(random.randint(0, 99999))
        out.append(w)
        r = random.random()
        if r < 0.07: out[-1] += "."
        elif r < 0.12: out[-1] += ","
    return " ".join(out)
n = int(sys.argv[1])
with open(sys.argv[2], "w") as f:
    for i in range(n):
        f.write("<!-- wp:paragraph --><p>" + body(random.randint(300, 900)) + "</p><!-- /wp:paragraph -->\n")
