"""Model merging over a zoo: permutation alignment (weight matching), interpolation, averaging, soups."""
