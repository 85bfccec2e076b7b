package main

import "image/color"

// colorGrey is the fill of baseline series in plots.
var colorGrey = color.RGBA{R: 150, G: 150, B: 150, A: 255}
