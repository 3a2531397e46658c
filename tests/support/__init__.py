"""Support code of the test suite (not tests): the fake Hub server, subprocess launchers."""
