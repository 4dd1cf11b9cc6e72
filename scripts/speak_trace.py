"""What a checkpoint's speak decision looked like in given scenarios: runs each one alone through the bench's model
agent (greedy, the checkpoint's own decoding settings unless overridden) and prints, per micro-turn, p(speak) = 1 -
p(<eot>) of its first out slot where it is at least ``--min``, beside the user's words and the agent's. Tells a reply
the model doubted (p near the threshold, maybe over several micro-turns: what ``--doubt-floor`` would combine) from
one it never meant to make (p near zero) or heard wrong (a word at the wrong time). With ``--heard``, also what its
listening head heard in each micro-turn (the likeliest word of each audio token, ``<sil>`` left out): whether a task
word or number was misheard, or heard and not acted on.

    python scripts/speak_trace.py sets/val-turn turn-00005 turn-00010 --checkpoint microturn/assets/model

Session 47, the bundled model on the six turns of sets/val-turn it fails: p(speak) never above 0.22 around the reply
moment (e.g. "What is seven minus four": 0.22 at 2.8 s, then under 0.05), so a memory of doubts cannot help them.

    python scripts/speak_trace.py sets/test timespeak-00001 --heard

Session 59, the bundled model on sets/test's spoken "Wait two seconds, then say now": heard "two", then "six" at
the first sound of "seconds", and counted down 26 s (its timer token <t129>).
"""
import argparse

from microturn.bench.agents import ModelAgent
from microturn.stream.scenario import read_set
from microturn.stream.tokenizer import EOT, SIL


def trace(agent: ModelAgent, scenario) -> tuple[list[tuple[float, float, list[int]]], list]:
    """[(time the micro-turn's words would start, p(speak), the words its listening head heard)] of every
    micro-turn, and the agent's words."""
    model, step, seen = agent.model, agent.model.step, []

    def logged(state, *args, **kw):
        t, out = int(state.t[0]), step(state, *args, **kw)
        heard = [int(w) for w in model.listen(out.heard[0]).argmax(-1) if int(w) != SIL]
        seen.append(((t + 1) * model.layout.delta, float(1 - out.text_logits[0, 0].softmax(-1)[EOT]), heard))
        return out

    model.step = logged
    try:
        words = agent.run(scenario).words
    finally:
        del model.step  # the instance attribute goes; the class's method is back
    return seen, words


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("set", help="a scenario set folder")
    ap.add_argument("ids", nargs="+", help="scenario ids, e.g. turn-00005")
    ap.add_argument("--checkpoint", default=None, help="default: the bundled model")
    ap.add_argument("--speak-threshold", type=float, default=None, help="default: the checkpoint's own")
    ap.add_argument("--min", type=float, default=0.05, help="print only micro-turns with p(speak) at least this")
    ap.add_argument("--heard", action="store_true", help="also print the words the listening head heard")
    a = ap.parse_args()
    scenarios = {s.id: s for s in read_set(a.set)}
    missing = [i for i in a.ids if i not in scenarios]
    if missing:
        raise SystemExit(f"not in {a.set}: {', '.join(missing)}")
    agent = ModelAgent(checkpoint=a.checkpoint, capacity=1, speak_threshold=a.speak_threshold)
    print(f"speak threshold {agent.sampling.speak_threshold}, doubt floor {agent.sampling.doubt_floor}")
    for i in a.ids:
        s = scenarios[i]
        seen, words = trace(agent, s)
        print(f"{i}: user: " + " ".join(f"{w.w}@{w.start:.1f}" for w in s.words if w.speaker == "user"))
        print("  agent: " + (" ".join(f"{w.w}@{w.start:.1f}" for w in words) or "(silent)"))
        print("  p(speak): " + (" ".join(f"{t:.1f}s:{p:.2f}" for t, p, _ in seen if p >= a.min) or f"never {a.min}"))
        if a.heard:
            # each micro-turn's words, by the time its audio had all come (the time printed)
            print("  heard: " + (" ".join(f"{t:.1f}s:{agent.tok.show(h).replace(' ', '/')}" for t, _, h in seen if h)
                                 or "nothing"))


if __name__ == "__main__":
    main()
