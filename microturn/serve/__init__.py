"""microturn.serve"""
