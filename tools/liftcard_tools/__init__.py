"""liftcard developer tools: the reference fee model (`feemodel`) and the shared
test-vector generator (`vectors`, console script `liftcard-vectors`)."""
