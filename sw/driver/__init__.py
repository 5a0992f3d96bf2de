"""sw/driver"""
