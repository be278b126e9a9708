"""`--set` overrides that shrink a run to a few seconds (16-unit nets, 300 transitions, SEEM on
16 probe rows every 20 steps, no startup phase). Tests add their own step budget and checkpoint
cadence."""

TINY_RUN = [
    "data.max_transitions=300",
    "algo.batch_size=32",
    "critic.hidden=[16, 16]",
    "actor.hidden=[16, 16]",
    "seem.every=20",
    "seem.probe_size=16",
    "seem.startup_every=0",
    "train.log_every=20",
    "train.eval_episodes=0",
    "train.threads=1",
]
