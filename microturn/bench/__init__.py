"""microturn.bench"""
