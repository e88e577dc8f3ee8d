//! Unit tests of the client against a mock server.
