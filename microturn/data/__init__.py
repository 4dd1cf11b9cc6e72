"""microturn.data"""
