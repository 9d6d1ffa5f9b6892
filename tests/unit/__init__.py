"""Fast tests of one module each: the rules, pinned without processes."""
