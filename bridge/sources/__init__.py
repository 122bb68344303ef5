"""Where samples come from: a live LSL stream (and its marker stream), or the built-in simulator."""
