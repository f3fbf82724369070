//! FFTs over chosen dimensions and a complex tensor type (being written).
