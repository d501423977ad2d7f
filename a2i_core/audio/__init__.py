"""The frozen audio encoders (VGGish, CLAP, AST) behind one interface, and the audio features they make."""
