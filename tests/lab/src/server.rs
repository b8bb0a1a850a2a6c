//! Lab server (issue 2).
