"""Helpers the test suite shares: servers it starts, clients it builds."""
