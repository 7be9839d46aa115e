"""liushou (留守): backend for rural schools caring for left-behind children."""
