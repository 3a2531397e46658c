"""Support code of the test suite (not tests): the fake Hub server, subprocess launchers, and the helpers that several
test files share (tiny models and batches, the tiny training corpus and arguments, in-process commands, the toy
task, the Seq2SeqTrainer fixtures). A test file imports these from here, never from another test file."""
