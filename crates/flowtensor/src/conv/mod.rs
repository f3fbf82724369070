//! 2-D convolutions (NCHW input, OIHW weights) and their transposes.
